"""The workflow on a real single-node SLURM cluster through profiles/slurm: every job is an
sbatch job, the training and compression jobs get the (fake) GPU, the results equal a local
run's, and a failing SLURM job is reported and recovered from.

The cluster (munged, slurmctld, slurmd with one fake GPU) is started by
scripts/slurm-cluster.sh in a temporary directory and stopped at the end of the module; as
root the script installs the Debian packages when they are missing."""

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from helpers import REPO, TINY, snakemake_command

PROFILE = REPO / "profiles" / "slurm"
CLUSTER = REPO / "scripts" / "slurm-cluster.sh"
GPU_RULES = {"train_dense", "train_shadow", "compress"}
TIMEOUT = 480  # seconds for one workflow run; the module takes ~4 min on 2 cores
# The SLURM run is limited to the summary and one figure (a rule without resources of its
# own): on 2 cores each SLURM job costs ~10 s, most of it snakemake and torch starting up.
TARGETS = ["results/tables/summary.csv", "results/figures/digits/training_curves.png"]

pytestmark = pytest.mark.slurm

# What only the test cluster needs, on top of the profile (a command-line option replaces
# the profile's whole key, so default-resources is given in full).
TEST_FLAGS = [
    "--default-resources",
    "slurm_partition=debug",
    "slurm_account=test",  # not checked: the test cluster has no accounting
    "mem_mb=1000",
    "runtime=10",
    # Without accounting, sacct fails on every query and snakemake waits forever.
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "3",
    "--slurm-keep-successful-logs",  # evidence that each job ran under SLURM
]

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


@dataclass
class Cluster:
    directory: Path
    env: dict[str, str]

    def jobs(self, run_id: str) -> dict[str, dict[str, str]]:
        """SLURM's record of every job named run_id: job id -> scontrol fields."""
        shown = subprocess.run(
            ["scontrol", "--oneliner", "show", "job"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=True,
        )
        jobs = {}
        for line in shown.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if fields.get("JobName") == run_id:
                jobs[fields["JobId"]] = fields
        return jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, request) -> Cluster:
    daemons = ("munged", "slurmctld", "slurmd", "sbatch")
    if os.geteuid() != 0 and not all(shutil.which(name) for name in daemons):
        pytest.skip(
            "SLURM is not installed and installing it needs root: "
            "apt-get install slurmctld slurmd slurm-client munge"
        )
    directory = tmp_path_factory.mktemp("slurm")
    # Own ports, so that a second test session's cluster cannot answer for this one.
    ports = {"SLURM_CLUSTER_CTLD_PORT": str(free_port())}
    ports["SLURM_CLUSTER_SLURMD_PORT"] = str(free_port())
    script_env = {**os.environ, **ports}

    def stop():
        subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], env=script_env, timeout=120)

    request.addfinalizer(stop)  # before starting: a half-started cluster is stopped too
    started = subprocess.run(
        ["bash", str(CLUSTER), "start", str(directory)],
        capture_output=True,
        text=True,
        env=script_env,
        timeout=900,  # includes apt-get on a fresh machine
    )
    assert started.returncode == 0, started.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    # directory/bin: the srun wrapper (see slurm-cluster.sh); then this venv's python, for
    # the jobs (sbatch --export=ALL passes PATH on).
    path = [str(directory / "bin"), str(Path(sys.executable).parent), env["PATH"]]
    env["PATH"] = os.pathsep.join(path)
    return Cluster(directory, env)


def snakemake_args(workdir: Path, configfiles: list[Path], *options: str) -> list[str]:
    return snakemake_command(workdir, configfiles, *options, *TARGETS)


def run_slurm(cluster: Cluster, workdir: Path, configfiles: list[Path]):
    args = snakemake_args(workdir, configfiles, "--profile", str(PROFILE), *TEST_FLAGS)
    return subprocess.run(args, capture_output=True, text=True, env=cluster.env, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def gpu_config(tmp_path_factory) -> list[Path]:
    """The tiny config, with one GPU per training and compression job (merged over TINY)."""
    overlay = tmp_path_factory.mktemp("config") / "gpu.yaml"
    resources = {**yaml.safe_load(TINY.read_text())["resources"], "gpu": 1}
    overlay.write_text(yaml.safe_dump({"resources": resources}))
    return [TINY, overlay]


@pytest.fixture(scope="module")
def runs(cluster, gpu_config, tmp_path_factory):
    """The same config run through SLURM and, at the same time, locally."""
    slurm_dir = tmp_path_factory.mktemp("slurm_run")
    local_dir = tmp_path_factory.mktemp("local_run")
    # The local run mostly uses the core that the serialised GPU jobs leave idle.
    local = subprocess.Popen(
        snakemake_args(local_dir, gpu_config, "--cores", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    try:
        slurm = run_slurm(cluster, slurm_dir, gpu_config)
        _, local_stderr = local.communicate(timeout=TIMEOUT)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait(timeout=30)
    assert local.returncode == 0, local_stderr[-3000:]
    assert slurm.returncode == 0, slurm.stderr[-5000:]
    return SimpleNamespace(slurm_dir=slurm_dir, local_dir=local_dir, log=slurm.stderr)


def run_id(log: str) -> str:
    """The run's UUID, the plugin's SLURM job name for every job of the run."""
    return re.search(r"SLURM run ID: (\S+)", log).group(1)


def rule_of(job: dict[str, str]) -> str:
    """The plugin's job comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    return re.match(r"rule_(.+?)(_wildcards_|$)", job["Comment"]).group(1)


def test_every_job_ran_under_slurm(runs, cluster):
    submitted = dict(SUBMITTED.findall(runs.log))
    done, total = map(int, re.findall(r"(\d+) of (\d+) steps \(100%\) done", runs.log)[-1])
    assert done == total
    assert len(submitted) == total  # no job ran on the submitting host
    for log in submitted.values():  # the jobstep's own log, kept by the flag above
        assert "--executor slurm-jobstep" in Path(log).read_text()
    jobs = cluster.jobs(run_id(runs.log))
    assert set(jobs) == set(submitted)
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    assert GPU_RULES | {"split", "attack", "summarize"} <= {rule_of(job) for job in jobs.values()}
    controller_log = (cluster.directory / "log" / "slurmctld.log").read_text()
    for job_id in jobs:
        assert f"_job_complete: JobId={job_id} WEXITSTATUS 0" in controller_log


def test_gpu_rules_got_the_gpu(runs, cluster):
    for job in cluster.jobs(run_id(runs.log)).values():
        wants_gpu = rule_of(job) in GPU_RULES
        assert ("gpu:1" in job.get("TresPerJob", "")) == wants_gpu, job


def test_gpu_zero_requests_no_gpu():
    """gpu=0 (the default config) adds no --gpus to sbatch; gpu=1 adds --gpus=1."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    assert set_gres_string(SimpleNamespace(resources=Resources(gpu=0))) == ""
    assert set_gres_string(SimpleNamespace(resources=Resources(gpu=1))) == " --gpus=1"


def test_results_equal_a_local_run(runs):
    for name in ("digits/split.csv", "tables/summary.csv"):
        slurm = runs.slurm_dir / "results" / name
        local = runs.local_dir / "results" / name
        # Training is deterministic on CPU for a seed: the same numbers wherever it runs.
        pd.testing.assert_frame_equal(pd.read_csv(slurm), pd.read_csv(local), check_exact=True)
        assert slurm.read_bytes() == local.read_bytes()


def test_a_failing_job_is_reported_and_a_rerun_recovers(runs, cluster, gpu_config):
    # Corrupt an input of one job only: the training curves figure reads the histories.
    history = runs.slurm_dir / "results/digits/dense/density1.0/seed0/history.csv"
    original = history.read_bytes()
    history.write_text("not a training history\n")
    failed = run_slurm(cluster, runs.slurm_dir, gpu_config)
    assert failed.returncode != 0
    assert "Error in rule figure_training" in failed.stderr
    reported = re.search(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", failed.stderr)
    assert reported, failed.stderr[-5000:]
    job_id = reported.group(1)
    assert cluster.jobs(run_id(failed.stderr))[job_id]["JobState"] == "FAILED"
    slurm_log = Path(dict(SUBMITTED.findall(failed.stderr))[job_id])
    assert "Error in rule figure_training" in slurm_log.read_text()

    history.write_bytes(original)  # the fault removed: only the failed job runs again
    rerun = run_slurm(cluster, runs.slurm_dir, gpu_config)
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    resubmitted = cluster.jobs(run_id(rerun.stderr))
    assert [rule_of(job) for job in resubmitted.values()] == ["figure_training"]
    assert {job["JobState"] for job in resubmitted.values()} == {"COMPLETED"}
