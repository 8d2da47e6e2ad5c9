"""Human review in Label Studio: task builders, export readers, voting, the server."""
