"""The `ray job submit` path against a real local head (`ray start --head`), and cluster.yaml."""
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.fixtures.demo_shards import write_demo_shards

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cluster_yaml_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] == 1
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


def test_relative_outputs_are_refused_only_in_a_submitted_job():
    from pipeline.config.submitted_job import JOB_CONFIG_VARIABLE, refuse_relative_outputs, submission_id
    from pipeline.errors import UserError

    # what Ray 2.60 gives a `ray job submit` entrypoint (and nothing else)
    job_env = {JOB_CONFIG_VARIABLE: json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_0.zip"},
                                                "metadata": {"job_submission_id": "raysubmit_abc"}})}
    assert submission_id(job_env) == "raysubmit_abc"
    assert submission_id({}) is None and submission_id({JOB_CONFIG_VARIABLE: "{not json"}) is None
    for argv in (["--output", "out"], ["--input", "x", "--output=runs/out"], ["--report", "rep"],
                 ["--key-secret", "secret.key"], ["--out", "./o"]):
        with pytest.raises(UserError, match=r"relative path in a `ray job submit` job \(raysubmit_abc\)") as err:
            refuse_relative_outputs(argv, job_env)
        assert "\n" not in str(err.value)
        refuse_relative_outputs(argv, {})                        # run by hand: the current directory is the user's
    for argv in (["--output", "/srv/out"], ["--output", "s3://bucket/out"], ["--output", "~/out"],
                 ["--output-format", "files", "--input", "photos"]):
        refuse_relative_outputs(argv, job_env)
    with pytest.raises(UserError, match="^out boxes.parquet: a relative path"):
        refuse_relative_outputs([], job_env, extra=(("out", "boxes.parquet"),))


def test_previews_default_output_folder_is_refused_in_a_submitted_job(monkeypatch, capsys, tmp_path):
    from jobs import preview
    from pipeline.config.submitted_job import JOB_CONFIG_VARIABLE

    monkeypatch.setenv(JOB_CONFIG_VARIABLE, json.dumps({"metadata": {"job_submission_id": "raysubmit_abc"}}))
    assert preview.main([str(tmp_path / "photo.jpg")]) == 2          # --out defaults to the relative "preview"
    assert "out preview: a relative path" in capsys.readouterr().err


def test_a_read_only_autoscaler_report_means_no_node_can_be_added():
    from ray._private import ray_constants

    from pipeline.execution.cluster_capacity import STATUS_KEY, adds_no_nodes

    assert STATUS_KEY == ray_constants.DEBUG_AUTOSCALING_STATUS
    node = "198b1324"
    # `ray start --head` without an autoscaling config: each node its own anonymous type
    assert adds_no_nodes({"autoscaler_report": {"node_type_mapping": {node: f"node_{node}"}}}) is True
    # a config's node types (`ray up`, --autoscaling-config): nodes may come
    assert adds_no_nodes({"autoscaler_report": {"node_type_mapping": {node: "head", "e5": "gpu_worker"}}}) is False
    assert adds_no_nodes(None) is None and adds_no_nodes({"autoscaler_report": {"node_type_mapping": {}}}) is None


def readme_job_submit() -> tuple[dict, list[str]]:
    """The README's `ray job submit` example: (its environment assignments, its command)."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("### On a cluster with `ray job submit`"):]
    block = block[block.index("```bash") + 7:block.index("```", block.index("```bash") + 7)]
    line = next(i for i, ln in enumerate(block.splitlines()) if "ray job submit" in ln)
    lines = block.splitlines()[line:]
    command = []
    for ln in lines:
        command.append(ln.split(" #")[0].rstrip().removesuffix("\\"))
        if not ln.rstrip().endswith("\\"):
            break
    words = shlex.split(" ".join(command))
    env = dict(w.split("=", 1) for w in words[:words.index("ray")])
    return env, words[words.index("ray"):]


def with_values(words: list[str], **values: str | list[str]) -> list[str]:
    """``words`` with the value of each ``--flag`` (underscores for dashes) replaced."""
    out, i = [], 0
    while i < len(words):
        out.append(words[i])
        flag = words[i].removeprefix("--").replace("-", "_")
        if words[i].startswith("--") and flag in values:
            new = values[flag]
            out.extend(new if isinstance(new, list) else [new])
            i += 1
        i += 1
    return out


def submit(command: list[str], env: dict, deadline_s: float = 180) -> subprocess.CompletedProcess:
    """Run `ray job submit`, again while the head's agent is not yet ready to take jobs."""
    deadline = time.time() + deadline_s      # its own wait: a loaded machine brings the agent up slowly
    while True:
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=400)
        if "No available agent" not in done.stderr + done.stdout or time.time() > deadline:
            return done
        time.sleep(2)


@pytest.mark.ray
def test_the_readmes_ray_job_submit_example_runs_as_written(pixel_model_dir, tmp_path):
    readme_env, example = readme_job_submit()
    assert readme_env == {"RAY_AUTH_MODE": "token"}
    assert example[:3] == ["ray", "job", "submit"] and "--num-gpus" in example
    assert example[example.index("--num-gpus") + 1] == "0"
    inputs = write_demo_shards(str(tmp_path / "in"), shards=2, per_shard=3)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")        # unix socket paths must stay short
    gcs, dash = free_port(), free_port()
    # the README's `. .venv/bin/activate`: this venv's bin first on the PATH of `ray start` and of the submit
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, **readme_env, "RAY_AUTH_TOKEN": secrets.token_hex(16), "VIRTUAL_ENV": str(venv_bin.parent),
           "PATH": f"{venv_bin}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}",
                             # the agent's default port (52365) is taken by any other cluster here,
                             # e.g. the session's ray_cluster: then no agent takes jobs
                             f"--dashboard-agent-listen-port={free_port()}",
                             "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True).returncode != 0:
            assert time.time() < deadline, "the head's job server did not come up"
            assert head.poll() is None, "ray start --head exited"
            time.sleep(1)
        out = tmp_path / "out"
        command = with_values(example, address=address, input=inputs, output=str(out), model=pixel_model_dir)
        done = submit(command, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "succeeded" in (done.stdout + done.stderr)
        run_dir = next(out.iterdir())
        manifest = pd.read_parquet(run_dir / "manifest.parquet")
        assert list(manifest.status) == ["ok", "ok"] and manifest.samples_ok.sum() == 6
        assert sorted(p.name for p in (run_dir / "shards").iterdir()) == ["faces-000000.tar", "faces-000001.tar"]

        # Two refusals, submitted side by side (the agent is up now): without --num-gpus 0 on this
        # CPU head (no GPU node, no autoscaler) a one-line error in seconds, not after --gpu-wait
        # (900 s by default); a relative --output, which would land in Ray's temporary copy of
        # the working directory, refused before anything runs.
        no_flag = command[:command.index("--num-gpus")] + command[command.index("--num-gpus") + 2:]
        started = time.monotonic()
        gpu_run = subprocess.Popen(with_values(no_flag, output=str(tmp_path / "gpu")), env=env, cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        relative = submit(with_values(command, output="relative_out"), env)
        gpu_out = gpu_run.communicate(timeout=400)[0]
        seconds = time.monotonic() - started
        print(f"job submit without --num-gpus 0 on a CPU head: error after {seconds:.1f} s")
        assert gpu_run.returncode != 0
        assert "error: no GPU worker can start: the cluster has no GPU node and no autoscaler" in gpu_out
        assert "--num-gpus 0 runs CPU workers" in gpu_out
        assert seconds < 120, seconds
        assert not list((tmp_path / "gpu").glob("*/shards/*.tar"))
        assert relative.returncode != 0
        assert "error: --output relative_out: a relative path in a `ray job submit` job (raysubmit_" in relative.stdout + relative.stderr
        assert not (REPO / "relative_out").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
