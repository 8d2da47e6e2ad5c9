import shutil, subprocess, sys, time
from pathlib import Path
def test_scratch(small_project):
    dest = Path("/tmp/store-scratch/proj")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(small_project, dest, symlinks=True)
    import yaml
    stages = ["ingest","baseline_model","anchor_candidates","anchor_translations","dictionary","blocks","retain_blocks","reinforce","generic_labels","dataset","finetune","evaluate@baseline","evaluate@reinforced","evaluate@unlearned","report"]
    out = []
    for s in stages:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "dvc", "repro", "-s", s], cwd=dest, capture_output=True, text=True)
        out.append(f"{s} dvc {time.perf_counter()-t:.1f}s rc={r.returncode}")
        assert r.returncode == 0, r.stdout + r.stderr
    Path("/tmp/store-scratch/times.txt").write_text("\n".join(out))
