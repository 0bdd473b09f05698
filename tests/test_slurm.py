"""The SLURM profile: scripts/install-profile.sh and the workflow on a real SLURM cluster.

install-profile.sh, against fake SLURM commands (fast): it writes profiles/slurm/profile.yaml
with its placeholders filled in where Snakemake finds `--profile slurm`, takes the partition
and account from sinfo and sacctmgr, never overwrites a different profile without --force,
and says what to pass when it cannot find them.

On a real single-node cluster (markers `slurm` and `slow`): the profile installed by the
script into a temporary XDG_CONFIG_HOME, the workflow run with exactly `--profile slurm` on the
smallest grid that has every kind of job (SLURM_GRID): every job is an sbatch job, the training
and compression jobs get the (fake) GPU of the type given to the script, the results equal a
local run of the same grid, and a failing SLURM job is reported and recovered from. The
cluster (munged, slurmctld, slurmd with one fake GPU) is started by scripts/slurm-cluster.sh
in a temporary directory and stopped at the end of the module; as root the script installs
the Debian packages when they are missing."""

import json
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

from helpers import HUNG_RUN_S, HUNG_STEP_S, REPO, TINY, changed, snakemake_command

TEMPLATE = REPO / "profiles" / "slurm" / "profile.yaml"
INSTALL = REPO / "scripts" / "install-profile.sh"
CLUSTER = REPO / "scripts" / "slurm-cluster.sh"
GPU_RULES = {"train_dense", "train_shadow", "train_references", "compress", "compress_logged"}
# The smallest grid with every kind of job these tests look at: the split, the dense and one
# shadow model, two compression methods (DST, and SafeCompress with its safety test) and the
# reference models of each (the tiny config's `evaluation.references`), the attack of each
# model, the summary and a figure (a rule without resources of its own); one density, seed and
# attack, no ablation, one GPU for each training and compression job. About a dozen jobs, the
# GPU ones one after another (the cluster has one); each costs a few CPU-seconds, most of it
# snakemake and torch starting up. The local run of the comparison runs the same grid.
SLURM_GRID = {
    "methods": ["dst", "safecompress"],
    "densities": [0.2],
    "shadow.n_models": 1,
    "evaluation.attacks": ["loss"],
    "evaluation.tradeoff_attack": "loss",
    "evaluation.roc_density": 0.2,
    "ablation.density": 0.2,
    "ablation.lambdas": [],
    "ablation.n_candidates": [],
    "ablation.strategy_sets": {},
    "ablation.settings": {},
    "resources.gpu": 1,
    "curves": {},
}
TARGETS = ["results/tables/summary.csv", "results/figures/digits/training_curves.png"]

# On top of the installed profile, only speed and evidence: partition, account (none: the
# test cluster has no accounting), status command and GPU type all come from the profile.
TEST_FLAGS = [
    "--slurm-init-seconds-before-status-checks",
    "3",
    "--slurm-keep-successful-logs",  # evidence that each job ran under SLURM
]
GPU_TYPE = "fake"  # the test cluster's GPU type (scripts/slurm-cluster.sh)

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


# --- install-profile.sh, against fake SLURM commands ------------------------------------

SLURM_COMMANDS = {"sinfo", "sacctmgr", "scontrol", "sacct", "squeue", "sbatch", "srun", "sshare"}
GRES = "gpu:a100:4(S:0-1),gpu:v100:2"
# sh bodies of fake SLURM commands; each also logs its arguments to $FAKE_LOG.
WITH_ACCOUNTING = {
    "sinfo": f'case "$*" in *%G*) echo "{GRES}" ;; *) printf "cpu*\\ngpu\\n" ;; esac',
    "sacctmgr": "echo proj1",
    "scontrol": "echo 'AccountingStorageType   = accounting_storage/slurmdbd'",
}
NO_ACCOUNTING = {
    **WITH_ACCOUNTING,
    "sacctmgr": "echo 'Only accounting_storage/slurmdbd is supported.' >&2; exit 1",
    "scontrol": "printf 'AccountingStorageType   = accounting_storage/none\\n"
    "MinJobAge               = 300 sec\\n'",
}


def fake_path(directory: Path, commands: dict[str, str] | None) -> str:
    """PATH with the fake `commands` first; None: a PATH without any SLURM command (every
    other command of PATH linked into one directory)."""
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    if commands is None:
        for entry in os.environ["PATH"].split(os.pathsep):
            for tool in Path(entry).glob("*") if Path(entry).is_dir() else []:
                link = bin_dir / tool.name
                if tool.name not in SLURM_COMMANDS and not link.exists():
                    link.symlink_to(tool)
        return str(bin_dir)
    for name, body in commands.items():
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >>"$FAKE_LOG"\n{body}\n')
        script.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def fake(tmp_path):
    """An environment factory: fake SLURM commands, a fresh HOME, no XDG_CONFIG_HOME."""
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"  # the script and snakemake run from here
    home.mkdir()
    elsewhere.mkdir()

    def make(commands: dict[str, str] | None = WITH_ACCOUNTING, **env: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
        return {
            **base,
            "PATH": fake_path(tmp_path, commands),
            "HOME": str(home),
            "USER": "alice",
            "FAKE_LOG": str(tmp_path / "calls.log"),
            **env,
        }

    return SimpleNamespace(make=make, home=home, cwd=elsewhere, log=tmp_path / "calls.log")


def run_install(env: dict[str, str], *args: str, cwd: Path | None = None):
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=HUNG_STEP_S,
    )


# What Snakemake itself makes of `--profile NAME` in an environment: which file it reads,
# and the settings it takes from it, resource expressions evaluated as for a job (Snakemake's
# own tmpdir and disk_mb defaults left out: they need a job's input).
READ_PROFILE = """
import json, sys
from snakemake.cli import get_argument_parser, get_profile_dir
name = sys.argv[1]
args = get_argument_parser([name]).parse_args([])
def value(resource):
    return resource.evaluate(
        wildcards={}, input=[], attempt=1, threads=1, rulename="r", async_run=None
    ).value
print(json.dumps({
    "file": str(get_profile_dir(name)[1].resolve()),
    "executor": args.executor,
    "default_resources": {
        k: value(r) for k, r in args.default_resources.items() if k not in ("tmpdir", "disk_mb")
    },
    "set_resources": {
        rule: {k: value(r) for k, r in resources.items()}
        for rule, resources in args.set_resources.items()
    },
    "status_command": args.slurm_status_command  # a dataclass MISSING when not set
    if isinstance(args.slurm_status_command, str) else None,
}))
"""


def snakemake_reads(name: str, env: dict[str, str], cwd: Path) -> dict:
    read = subprocess.run(
        [sys.executable, "-c", READ_PROFILE, name],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=HUNG_STEP_S,
    )
    assert read.returncode == 0, read.stderr[-3000:]
    return json.loads(read.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("xdg", ["absolute", "unset", "relative"])
def test_install_writes_where_snakemake_looks(fake, tmp_path, xdg):
    """XDG_CONFIG_HOME when absolute, else ~/.config, as Snakemake (platformdirs) has it."""
    env = fake.make()
    expected = fake.home / ".config" / "snakemake" / "slurm" / "profile.yaml"
    if xdg == "absolute":
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
        expected = tmp_path / "xdg" / "snakemake" / "slurm" / "profile.yaml"
    elif xdg == "relative":
        env["XDG_CONFIG_HOME"] = "xdg"  # not absolute: ignored by the XDG spec

    installed = run_install(env, cwd=fake.cwd)
    assert installed.returncode == 0, installed.stderr
    assert "partition: cpu (the cluster's default partition, from sinfo)" in installed.stdout
    assert "account:   proj1 (your default account, from sacctmgr)" in installed.stdout
    assert f"wrote {expected}" in installed.stdout
    assert "sacctmgr -nP show user alice format=defaultaccount" in fake.log.read_text()
    read = snakemake_reads("slurm", env, fake.cwd)
    assert read["file"] == str(expected.resolve())
    assert read["executor"] == "slurm"
    assert read["default_resources"]["slurm_partition"] == "cpu"
    assert read["default_resources"]["slurm_account"] == "proj1"
    assert read["set_resources"] == {}
    assert read["status_command"] is None  # the plugin's default: sacct


def profile_settings(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("cluster_kind", ["accounting", "no accounting"])
def test_install_fills_in_the_template_and_nothing_else(fake, tmp_path, cluster_kind):
    commands = WITH_ACCOUNTING if cluster_kind == "accounting" else NO_ACCOUNTING
    env = fake.make(commands, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    args = ["--partition", "all", "--gres-gpu", "gpu:a100"]  # `all`: a Python built-in
    if cluster_kind == "accounting":
        args += ["--account", "proj2"]
    installed = run_install(env, *args, cwd=fake.cwd)
    assert installed.returncode == 0, installed.stderr
    target = tmp_path / "xdg" / "snakemake" / "slurm" / "profile.yaml"
    assert "<your_" not in target.read_text()

    template = profile_settings(TEMPLATE)
    expected = {**template, "default-resources": dict(template["default-resources"])}
    expected["default-resources"]["slurm_partition"] = "'all'"
    expected["set-resources"] = {rule: {"gpu_model": "'a100'"} for rule in GPU_RULES}
    if cluster_kind == "accounting":
        expected["default-resources"]["slurm_account"] = "'proj2'"
    else:  # no account, and job states from squeue: sacct would fail forever
        del expected["default-resources"]["slurm_account"]
        expected["slurm-status-command"] = "squeue"
        assert "account:   none (no job accounting" in installed.stdout
        assert "status:    squeue" in installed.stdout
    assert profile_settings(target) == expected

    read = snakemake_reads("slurm", env, fake.cwd)
    assert read["default_resources"]["slurm_partition"] == "all"  # a string, not the built-in
    assert read["set_resources"] == {rule: {"gpu_model": "a100"} for rule in GPU_RULES}
    status = "squeue" if cluster_kind == "no accounting" else None
    assert read["status_command"] == status

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources(gpu=2, gpu_model="a100"))
    assert set_gres_string(job) == " --gpus=a100:2"


def test_the_template_still_works_as_a_path(fake):
    """`--profile profiles/slurm` from the repository root reads the placeholders as such."""
    read = snakemake_reads("profiles/slurm", fake.make(), REPO)
    assert read["file"] == str(TEMPLATE)
    assert read["default_resources"]["slurm_partition"] == "<your_partition>"
    assert read["default_resources"]["slurm_account"] == "<your_account>"


@pytest.mark.slow
def test_install_is_idempotent_and_replaces_only_with_force(fake, tmp_path):
    env = fake.make(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    directory = tmp_path / "xdg" / "snakemake" / "slurm"
    target = directory / "profile.yaml"
    assert run_install(env).returncode == 0
    first = target.read_bytes()

    again = run_install(env, "--partition", "cpu", "--account", "proj1")  # the same outcome
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert target.read_bytes() == first

    other = run_install(env, "--partition", "gpu")
    assert other.returncode == 1
    assert "--force" in other.stderr
    assert "+  slurm_partition: \"'gpu'\"" in other.stderr  # the diff
    assert target.read_bytes() == first
    assert sorted(p.name for p in directory.iterdir()) == ["profile.yaml"]

    forced = run_install(env, "--partition", "gpu", "--force")
    assert forced.returncode == 0, forced.stderr
    assert profile_settings(target)["default-resources"]["slurm_partition"] == "'gpu'"
    assert (directory / "profile.yaml.bak").read_bytes() == first

    # A config.yaml beside it (an older profile): Snakemake would read either of the two.
    (directory / "config.yaml").write_text("executor: slurm\n")
    kept = run_install(env, "--partition", "gpu")
    assert kept.returncode == 1
    assert str(directory / "config.yaml") in kept.stderr
    assert run_install(env, "--partition", "gpu", "--force").returncode == 0
    assert not (directory / "config.yaml").exists()
    assert (directory / "config.yaml.bak").exists()
    assert snakemake_reads("slurm", env, fake.cwd)["file"] == str(target.resolve())


@pytest.mark.parametrize(
    ("commands", "messages"),
    [
        pytest.param(
            None, ["no sinfo command", "Pass --partition P", "Pass --account A"], id="no-slurm"
        ),
        pytest.param(
            {**WITH_ACCOUNTING, "sinfo": "printf 'cpu\\ngpu\\n'"},
            ["sinfo marks no partition as the default", "cpu gpu", "Pass --partition P"],
            id="no-default-partition",
        ),
        pytest.param(
            {
                **WITH_ACCOUNTING,
                "sinfo": "echo 'sinfo: error: Could not establish a configuration source'"
                " >&2; exit 1",
                "sacctmgr": "exit 1",
            },
            [
                "sinfo failed: sinfo: error: Could not establish",
                "Pass --partition P",
                "--account A",
            ],
            id="sinfo-fails",
        ),
    ],
)
def test_install_says_what_to_pass(fake, tmp_path, commands, messages):
    env = fake.make(commands, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    failed = run_install(env)
    assert failed.returncode == 1
    for message in messages:
        assert message in failed.stderr
    assert "nothing written" in failed.stderr
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--gres-gpu", "gpu:a100:2"], 2, "no count here"),
        (["--gres-gpu", "gpu:h100"], 1, "no node has GPUs of type 'h100'"),
        (["--gres-gpu", "mps"], 2, "give gpu or gpu:TYPE"),
        (["--account", "a b"], 2, "letters, digits"),
        (["--account", "x", "--no-account"], 2, "exclude each other"),
        (["--partition"], 2, "--partition needs a value"),
        (["--cores", "2"], 2, "unknown argument: --cores"),
    ],
)
def test_install_refuses_bad_options(fake, tmp_path, args, status, message):
    refused = run_install(fake.make(XDG_CONFIG_HOME=str(tmp_path / "xdg")), *args)
    assert refused.returncode == status
    assert message in refused.stderr
    assert not (tmp_path / "xdg").exists()


def test_install_help():
    shown = run_install(dict(os.environ), "--help")
    assert shown.returncode == 0
    for option in ("--partition", "--account", "--no-account", "--gres-gpu", "--force"):
        assert option in shown.stdout
    assert "XDG_CONFIG_HOME" in shown.stdout
    assert "snakemake --profile slurm" in shown.stdout


# --- the workflow on a real SLURM cluster ------------------------------------------------


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
            timeout=HUNG_STEP_S,
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
        subprocess.run(
            ["bash", str(CLUSTER), "stop", str(directory)], env=script_env, timeout=HUNG_STEP_S
        )

    request.addfinalizer(stop)  # before starting: a half-started cluster is stopped too
    started = subprocess.run(
        ["bash", str(CLUSTER), "start", str(directory)],
        capture_output=True,
        text=True,
        env=script_env,
        timeout=HUNG_RUN_S,  # includes apt-get on a fresh machine
    )
    assert started.returncode == 0, started.stderr[-3000:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    # directory/bin: the srun wrapper (see slurm-cluster.sh); then this venv's python, for
    # the jobs (sbatch --export=ALL passes PATH on).
    path = [str(directory / "bin"), str(Path(sys.executable).parent), env["PATH"]]
    env["PATH"] = os.pathsep.join(path)
    return Cluster(directory, env)


@pytest.fixture(scope="module")
def slurm_env(cluster, tmp_path_factory) -> dict[str, str]:
    """The cluster's environment, with the profile installed as a user would (the partition,
    account and status command as the script finds them) into a fresh XDG_CONFIG_HOME."""
    env = {**cluster.env, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg"))}
    installed = run_install(env, "--gres-gpu", f"gpu:{GPU_TYPE}")
    assert installed.returncode == 0, installed.stderr
    assert "partition: debug (the cluster's default partition, from sinfo)" in installed.stdout
    assert "account:   none (no job accounting on this cluster" in installed.stdout
    assert "status:    squeue" in installed.stdout
    return env


def snakemake_args(workdir: Path, configfiles: list[Path], *options: str) -> list[str]:
    return snakemake_command(workdir, configfiles, *options, *TARGETS)


def run_slurm(env: dict[str, str], workdir: Path, configfiles: list[Path]):
    """`snakemake --profile slurm`, as typed, from the run's own directory."""
    args = snakemake_args(workdir, configfiles, "--profile", "slurm", *TEST_FLAGS)
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=workdir, timeout=HUNG_RUN_S
    )


@pytest.fixture(scope="module")
def grid_config(tmp_path_factory) -> list[Path]:
    """The tiny config cut down to SLURM_GRID, as one complete file (Snakemake merges a
    second --configfile key by key, so an overlay could not empty the ablation sweeps)."""
    config = yaml.safe_load(TINY.read_text())
    for key, value in SLURM_GRID.items():
        config = changed(config, key, value)
    path = tmp_path_factory.mktemp("config") / "slurm-grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return [path]


@pytest.fixture(scope="module")
def runs(cluster, slurm_env, grid_config, tmp_path_factory):
    """The same grid run through SLURM and, at the same time, locally."""
    slurm_dir = tmp_path_factory.mktemp("slurm_run")
    local_dir = tmp_path_factory.mktemp("local_run")
    # The local run mostly uses the core that the serialised GPU jobs leave idle.
    local = subprocess.Popen(
        snakemake_args(local_dir, grid_config, "--cores", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster.env,
    )
    try:
        slurm = run_slurm(slurm_env, slurm_dir, grid_config)
        _, local_stderr = local.communicate(timeout=HUNG_RUN_S)
    finally:
        if local.poll() is None:
            local.kill()
            local.wait(timeout=HUNG_STEP_S)
    assert local.returncode == 0, local_stderr[-3000:]
    assert slurm.returncode == 0, slurm.stderr[-5000:]
    return SimpleNamespace(
        slurm_dir=slurm_dir, local_dir=local_dir, log=slurm.stderr, local_log=local_stderr
    )


def run_id(log: str) -> str:
    """The run's UUID, the plugin's SLURM job name for every job of the run."""
    return re.search(r"SLURM run ID: (\S+)", log).group(1)


def rule_of(job: dict[str, str]) -> str:
    """The plugin's job comment is rule_<rule> or rule_<rule>_wildcards_<values>."""
    return re.match(r"rule_(.+?)(_wildcards_|$)", job["Comment"]).group(1)


def steps_done(log: str) -> tuple[int, int]:
    """(done, total) of a run's last progress line."""
    return tuple(map(int, re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)[-1]))


@pytest.mark.slurm
def test_every_job_ran_under_slurm(runs, cluster):
    submitted = dict(SUBMITTED.findall(runs.log))
    done, total = steps_done(runs.log)
    assert done == total
    assert (done, total) == steps_done(runs.local_log)  # the local run: the same jobs
    assert len(submitted) == total  # no job ran on the submitting host
    for log in submitted.values():  # the jobstep's own log, kept by the flag above
        assert "--executor slurm-jobstep" in Path(log).read_text()
    jobs = cluster.jobs(run_id(runs.log))
    assert set(jobs) == set(submitted)
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    assert {job["Partition"] for job in jobs.values()} == {"debug"}  # the installed profile's
    assert GPU_RULES | {"split", "attack", "summarize"} <= {rule_of(job) for job in jobs.values()}
    controller_log = (cluster.directory / "log" / "slurmctld.log").read_text()
    for job_id in jobs:
        assert f"_job_complete: JobId={job_id} WEXITSTATUS 0" in controller_log


@pytest.mark.slurm
def test_gpu_rules_got_the_gpu(runs, cluster):
    """One GPU of the type given to install-profile.sh (--gpus=fake:1), and only those."""
    for job in cluster.jobs(run_id(runs.log)).values():
        wants_gpu = rule_of(job) in GPU_RULES
        assert (f"gpu:{GPU_TYPE}:1" in job.get("TresPerJob", "")) == wants_gpu, job
        assert ("gpu" in job.get("TresPerJob", "")) == wants_gpu, job


def test_gpu_zero_requests_no_gpu():
    """gpu=0 (the default config) adds no --gpus to sbatch; gpu=1 adds --gpus=1."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    assert set_gres_string(SimpleNamespace(resources=Resources(gpu=0))) == ""
    assert set_gres_string(SimpleNamespace(resources=Resources(gpu=1))) == " --gpus=1"


@pytest.mark.slurm
def test_results_equal_a_local_run(runs):
    for name in ("digits/split0/split.csv", "tables/summary.csv"):
        slurm = runs.slurm_dir / "results" / name
        local = runs.local_dir / "results" / name
        # Training is deterministic on CPU for a seed: the same numbers wherever it runs.
        pd.testing.assert_frame_equal(pd.read_csv(slurm), pd.read_csv(local), check_exact=True)
        assert slurm.read_bytes() == local.read_bytes()


@pytest.mark.slurm
def test_a_failing_job_is_reported_and_a_rerun_recovers(runs, cluster, slurm_env, grid_config):
    # Corrupt an input of one job only: the training curves figure reads the histories.
    history = runs.slurm_dir / "results/digits/split0/dense/density1.0/seed0/history.csv"
    original = history.read_bytes()
    history.write_text("not a training history\n")
    failed = run_slurm(slurm_env, runs.slurm_dir, grid_config)
    assert failed.returncode != 0
    assert "Error in rule figure_training" in failed.stderr
    reported = re.search(r"SLURM-job '(\d+)' failed, SLURM status is: 'FAILED'", failed.stderr)
    assert reported, failed.stderr[-5000:]
    job_id = reported.group(1)
    assert cluster.jobs(run_id(failed.stderr))[job_id]["JobState"] == "FAILED"
    slurm_log = Path(dict(SUBMITTED.findall(failed.stderr))[job_id])
    assert "Error in rule figure_training" in slurm_log.read_text()

    history.write_bytes(original)  # the fault removed: only the failed job runs again
    rerun = run_slurm(slurm_env, runs.slurm_dir, grid_config)
    assert rerun.returncode == 0, rerun.stderr[-5000:]
    resubmitted = cluster.jobs(run_id(rerun.stderr))
    assert [rule_of(job) for job in resubmitted.values()] == ["figure_training"]
    assert {job["JobState"] for job in resubmitted.values()} == {"COMPLETED"}
