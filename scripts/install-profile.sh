#!/usr/bin/env bash
# Install this workflow's SLURM profile where Snakemake looks for a profile given by name, so
# that `snakemake --profile slurm` works from any directory. The profile's text is
# profiles/slurm/profile.yaml; this script only fills in its placeholders. `--help` says more.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATE=$REPO/profiles/slurm/profile.yaml
NAME=slurm      # the profile's name: `snakemake --profile slurm`
QUERY_TIMEOUT=30 # seconds for each SLURM query (sinfo, sacctmgr, scontrol)

usage() {
    cat <<EOF
usage: bash scripts/install-profile.sh [--partition P] [--account A | --no-account]
                                       [--gres-gpu gpu[:TYPE]] [--force]

Writes this workflow's SLURM profile (profiles/slurm/profile.yaml, placeholders filled in)
to \$XDG_CONFIG_HOME/snakemake/$NAME/profile.yaml (without XDG_CONFIG_HOME:
~/.config/snakemake/$NAME/profile.yaml), where Snakemake finds it by name. Afterwards

    snakemake --profile $NAME

works from the repository and from any other directory. Run it on the cluster's login node.

  --partition P     the partition of every job. Default: the cluster's default partition,
                    the one \`sinfo\` marks with '*'.
  --account A       the account every job is charged to (sbatch -A). Default: your default
                    account, \`sacctmgr -nP show user \$USER format=defaultaccount\`. On a
                    cluster without job accounting (AccountingStorageType none) no account.
  --no-account      submit without -A, for a cluster that charges no account.
  --gres-gpu NAME   how GPU jobs ask for GPUs on this cluster: \`gpu\` (any GPU, the default)
                    or \`gpu:TYPE\`, a GPU type the cluster lists in \`sinfo -o "%P %G"\`
                    (e.g. gpu:a100). With a type, the training and compression jobs ask for
                    --gpus=TYPE:N, N being the config's \`resources: gpu\`; such a profile is
                    for runs with gpu >= 1 (with gpu: 0 they would ask for --gpus=TYPE:0).
                    The number of GPUs never goes here: it is the config's.
  --force           replace an existing profile that differs (the old one is kept as .bak).
  -h, --help        this text.

On a cluster without job accounting the profile also reads job states with squeue
(slurm-status-command: squeue): sacct fails there and snakemake would wait forever.
Running it again with the same outcome changes nothing. It prints what it chose and where
it wrote the profile. Other settings (QoS, sbatch options, per-rule partitions): edit the
written file; profiles/slurm/README.md lists them.
EOF
}

say() { echo "install-profile: $*"; }
warn() { echo "install-profile: warning: $*" >&2; }
die() {
    echo "install-profile: $*" >&2
    exit 1
}
usage_error() {
    echo "install-profile: $*" >&2
    echo "usage: bash scripts/install-profile.sh [--partition P] [--account A | --no-account] [--gres-gpu gpu[:TYPE]] [--force] (--help)" >&2
    exit 2
}

have() { command -v "$1" >/dev/null 2>&1; }

# A SLURM query's stdout, bounded in time (a login node whose controller does not answer
# would otherwise keep each query for minutes); its stderr goes to $tmp/stderr.
query() {
    if have timeout; then
        timeout "$QUERY_TIMEOUT" "$@" 2>"$tmp/stderr"
    else
        "$@" 2>"$tmp/stderr"
    fi
}
# The first line of the last query's stderr, for messages.
query_error() { head -n 1 "$tmp/stderr" 2>/dev/null || true; }

# Where Snakemake (platformdirs) looks for a profile by name: $XDG_CONFIG_HOME when it is an
# absolute path, else ~/.config (macOS: ~/Library/Application Support), then /snakemake.
config_dir() {
    if [[ ${XDG_CONFIG_HOME:-} == /* ]]; then
        echo "$XDG_CONFIG_HOME/snakemake"
    elif [[ $(uname -s) == Darwin ]]; then
        echo "${HOME:?HOME is not set}/Library/Application Support/snakemake"
    else
        echo "${HOME:?HOME is not set}/.config/snakemake"
    fi
}

partition="" account="" no_account=false gres_gpu="" force=false
while (($#)); do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    --force) force=true ;;
    --no-account) no_account=true ;;
    --partition | --account | --gres-gpu)
        if (($# < 2)) || [[ -z $2 || $2 == -* ]]; then
            usage_error "$1 needs a value"
        fi
        case $1 in
        --partition) partition=$2 ;;
        --account) account=$2 ;;
        --gres-gpu) gres_gpu=$2 ;;
        esac
        shift
        ;;
    --partition=* | --account=* | --gres-gpu=*)
        value=${1#*=}
        [[ -n $value ]] || usage_error "${1%%=*} needs a value"
        case $1 in
        --partition=*) partition=$value ;;
        --account=*) account=$value ;;
        --gres-gpu=*) gres_gpu=$value ;;
        esac
        ;;
    *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
if $no_account && [[ -n $account ]]; then
    usage_error "--account and --no-account exclude each other"
fi
# SLURM names; nothing that YAML or Snakemake's resource parsing would read differently.
name_re='^[A-Za-z0-9_.-]+$'
[[ -z $partition || $partition =~ ^[A-Za-z0-9_.,-]+$ ]] ||
    usage_error "--partition '$partition': letters, digits, _ . - and , only"
[[ -z $account || $account =~ $name_re ]] ||
    usage_error "--account '$account': letters, digits, _ . - only"
gpu_type=""
case $gres_gpu in
"" | gpu) ;;
gpu:?*) gpu_type=${gres_gpu#gpu:} ;;
*)
    usage_error "--gres-gpu '$gres_gpu': give gpu or gpu:TYPE. The plugin asks for GPUs with" \
        "--gpus, which SLURM maps to the GRES named gpu; for another GRES set 'gres' by hand" \
        "(profiles/slurm/README.md)."
    ;;
esac
if [[ $gpu_type == *:* || $gpu_type =~ ^[0-9]+$ ]]; then
    usage_error "--gres-gpu '$gres_gpu': no count here, only gpu or gpu:TYPE; the number of" \
        "GPUs per job is the config's resources: gpu"
fi
[[ -z $gpu_type || $gpu_type =~ ^[A-Za-z0-9_.]+$ ]] ||
    usage_error "--gres-gpu '$gres_gpu': a type has letters, digits, _ and . only"
[[ -f $TEMPLATE ]] || die "the profile's source $TEMPLATE is missing"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- what the cluster says ---------------------------------------------------------------
errors=()

# The partition: given, else the one sinfo marks as the default with '*'.
partitions="" sinfo_error=""
if have sinfo; then
    partitions=$(query sinfo -h -o %P) || sinfo_error="sinfo failed: $(query_error)"
else
    sinfo_error="no sinfo command here (run this on the cluster's login node)"
fi
if [[ -n $partition ]]; then
    partition_why="given"
    if [[ -z $sinfo_error ]]; then
        for name in ${partition//,/ }; do
            tr -d '*' <<<"$partitions" | grep -qxF -- "$name" ||
                warn "sinfo does not list partition '$name'; it lists: $(tr -d '*' <<<"$partitions" | paste -sd ' ' -)"
        done
    fi
else
    partition=$(sed -n '/\*$/{s/\*$//p;q;}' <<<"$partitions")
    partition_why="the cluster's default partition, from sinfo"
    if [[ -z $partition ]]; then
        if [[ -n $sinfo_error ]]; then
            errors+=("cannot find the default partition: $sinfo_error. Pass --partition P.")
        else
            errors+=("sinfo marks no partition as the default (with '*'); it lists:\
 $(paste -sd ' ' - <<<"$partitions"). Pass --partition P.")
        fi
    fi
fi

# Job accounting: AccountingStorageType none (or unset) means no accounts and no sacct.
accounting=unknown storage="" min_job_age=""
if have scontrol && config=$(query scontrol show config); then
    storage=$(sed -n '/^AccountingStorageType *=/{s/^[^=]*= *//p;q;}' <<<"$config")
    case $storage in
    "" | "(null)" | accounting_storage/none) accounting=none ;;
    *) accounting=yes ;;
    esac
    # "MinJobAge = 300 sec" (or 1h), as the plugin reads it.
    if [[ $(sed -n '/^MinJobAge *=/{p;q;}' <<<"$config") =~ =\ *([0-9]+)\ *([a-z]*) ]]; then
        min_job_age=${BASH_REMATCH[1]}
        if [[ ${BASH_REMATCH[2]} == h* ]]; then min_job_age=$((min_job_age * 3600)); fi
    fi
fi

# The account: given, else the user's default account, else none without accounting.
user=${USER:-$(id -un)}
if $no_account; then
    account_why="--no-account"
elif [[ -n $account ]]; then
    account_why="given"
else
    default_account="" sacctmgr_error=""
    if have sacctmgr; then
        if default_account=$(query sacctmgr -nP show user "$user" format=defaultaccount); then
            default_account=$(sed -n '1{s/[[:space:]]//g;p;}' <<<"$default_account")
            [[ -n $default_account ]] ||
                sacctmgr_error="sacctmgr lists no default account for $user"
        else
            default_account=""
            sacctmgr_error="sacctmgr failed: $(query_error)"
        fi
    else
        sacctmgr_error="no sacctmgr command here"
    fi
    if [[ -n $default_account ]]; then
        [[ $default_account =~ $name_re ]] ||
            die "sacctmgr's default account '$default_account' is no plain name; pass --account A"
        account=$default_account
        account_why="your default account, from sacctmgr"
    elif [[ $accounting == none ]]; then
        account_why="no job accounting on this cluster: AccountingStorageType=${storage:-none}"
    else
        errors+=("cannot find your SLURM account: $sacctmgr_error. Pass --account A\
 (\`sacctmgr -nP show assoc user=$user format=account\` lists yours), or --no-account if\
 this cluster charges none.")
    fi
fi

# GPUs: the type must be one that some node has, or its jobs would never start.
gpu_why="any type (--gpus=N, N from the config's resources: gpu)"
if [[ -n $gres_gpu ]] && have sinfo && gres=$(query sinfo -h -o %G); then
    gpu_gres=$(tr ',' '\n' <<<"$gres" | sed 's/(.*//' | grep '^gpu\(:\|$\)' | sort -u || true)
    if [[ -n $gpu_type ]] && ! awk -F: -v t="$gpu_type" '$2 == t {f = 1} END {exit !f}' <<<"$gpu_gres"; then
        errors+=("no node has GPUs of type '$gpu_type' (sinfo -o %G lists:\
 $(paste -sd ' ' - <<<"${gpu_gres:-no GPUs}")); jobs asking for them would never start.\
 Pass --gres-gpu gpu:TYPE with one of those types, or gpu.")
    elif [[ -z $gpu_gres ]]; then
        warn "no node lists a gpu GRES (sinfo -o %G): GPU jobs (config gpu >= 1) cannot start"
    fi
fi
if [[ -n $gpu_type ]]; then
    gpu_why="$gpu_type (--gpus=$gpu_type:N, N from the config's resources: gpu)"
fi

if ((${#errors[@]})); then
    for error in "${errors[@]}"; do
        echo "install-profile: $error" >&2
    done
    echo "install-profile: nothing written." >&2
    exit 1
fi

# --- the profile: the template with its placeholders filled in -----------------------------
status_command=sacct
if [[ $accounting == none ]]; then status_command=squeue; fi
init_seconds=$(sed -n 's/^slurm-init-seconds-before-status-checks: *\([0-9]*\).*/\1/p' "$TEMPLATE")

filled=0 uncommented=0
# The template's first comment lines say how to install it; here they say where it came from.
render() {
    local line header=true
    echo "# Snakemake profile for a SLURM cluster (snakemake-executor-plugin-slurm >= 2.8), written"
    echo "# by scripts/install-profile.sh of $REPO"
    echo "# from its profiles/slurm/profile.yaml (profiles/slurm/README.md there says more):"
    echo "#   partition $partition, account ${account:-none}, job states from $status_command," \
        "GPU type ${gpu_type:-any}"
    echo "# To change it, run that script again (with --force), or edit this file."
    while IFS= read -r line || [[ -n $line ]]; do
        if $header && [[ $line == "#"* ]]; then continue; fi
        header=false
        case $line in
        *"<your_partition>"*)
            line=${line//"<your_partition>"/"$partition"}
            filled=$((filled + 1))
            ;;
        *"<your_account>"*)
            if [[ -n $account ]]; then
                line=${line//"<your_account>"/"$account"}
            else
                line="  # no slurm_account: sbatch gets no -A"
            fi
            filled=$((filled + 1))
            ;;
        "# slurm-status-command: squeue")
            if [[ $status_command == squeue ]]; then
                line=${line#"# "}
                uncommented=$((uncommented + 1))
            fi
            ;;
        "# set-resources:" | "#   "*"<your_gpu_type>"*)
            if [[ -n $gpu_type ]]; then
                line=${line#"# "}
                line=${line//"<your_gpu_type>"/"$gpu_type"}
                uncommented=$((uncommented + 1))
            fi
            ;;
        esac
        printf '%s\n' "$line"
    done <"$TEMPLATE"
}
render >"$tmp/profile.yaml"
# The template and this script must agree: every line it means to change was there.
expected=0
if [[ $status_command == squeue ]]; then expected=$((expected + 1)); fi
if [[ -n $gpu_type ]]; then # `set-resources:` and one line per GPU rule
    expected=$((expected + 1 + $(grep -c '^#   .*<your_gpu_type>' "$TEMPLATE")))
fi
if ((filled != 2 || uncommented != expected)) ||
    [[ $(grep -v '^ *#' "$tmp/profile.yaml") == *"<your_"* ]]; then
    die "$TEMPLATE no longer has the placeholder lines this script fills in; update the script"
fi

# What was chosen, and why.
report() {
    say "partition: $partition ($partition_why)"
    say "account:   ${account:-none} ($account_why)"
    if [[ $status_command == squeue ]]; then
        say "status:    squeue (no job accounting, so no sacct)"
        if [[ -n $min_job_age && -n $init_seconds ]] && ((min_job_age < 3 * init_seconds)); then
            warn "MinJobAge is ${min_job_age}s, below 3 x slurm-init-seconds-before-status-checks" \
                "(${init_seconds}s): the plugin then uses sacct, which waits forever here. Lower" \
                "that setting in $target to at most $((min_job_age / 3))."
        fi
    elif [[ $accounting == unknown ]]; then
        say "status:    sacct (job accounting not checked: scontrol did not answer). On a cluster" \
            "without accounting uncomment slurm-status-command: squeue in $target."
    else
        say "status:    sacct"
    fi
    say "GPUs:      $gpu_why"
}

# --- install -----------------------------------------------------------------------------
dir=$(config_dir)/$NAME
target=$dir/profile.yaml
if [[ -e $target && $target -ef $TEMPLATE ]]; then
    die "$target is the repository's template itself (a link?); remove that link first"
fi
# Snakemake reads profile.yaml or config.yaml (or profile.vN+.yaml); with two it picks either.
others=()
if [[ -d $dir ]]; then
    for file in "$dir"/*.yaml; do
        if [[ -e $file && $file != "$target" &&
            $(basename "$file") =~ ^(profile|config)(\.v[0-9]+\+)?\.yaml$ ]]; then
            others+=("$file")
        fi
    done
fi
if [[ -f $target ]] && ((${#others[@]} == 0)) && cmp -s "$tmp/profile.yaml" "$target"; then
    report
    say "$target is already this profile; nothing changed."
    say "run: snakemake --profile $NAME"
    exit 0
fi
if [[ -e $target || ${#others[@]} -gt 0 ]] && ! $force; then
    {
        echo "install-profile: a different profile '$NAME' exists in $dir:"
        if [[ -e $target ]]; then
            diff -u --label "$target" --label "what this script would write" \
                "$target" "$tmp/profile.yaml" >"$tmp/diff" || true
            sed 's/^/    /' "$tmp/diff" | head -n 40 || true
        fi
        for file in "${others[@]}"; do echo "    $file"; done
        echo "install-profile: nothing written; run again with --force to replace it (the old file is kept as .bak)."
    } >&2
    exit 1
fi

mkdir -p "$dir"
for file in "${others[@]}" "$target"; do
    if [[ -e $file ]]; then
        mv -f "$file" "$file.bak"
        say "kept the old $(basename "$file") as $file.bak"
    fi
done
cp "$tmp/profile.yaml" "$target.tmp.$$"
mv -f "$target.tmp.$$" "$target"

report
say "wrote $target"
say "run: snakemake --profile $NAME"
