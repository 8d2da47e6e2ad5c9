"""Tools around the pipeline: profiles and parameter sweeps."""
