#!/usr/bin/env bash
# Deploys a Cloud Functions (2nd gen) HTTP function serving a model, or a Cloud Run
# function (--target run). The source uploaded is staged apart from this repository:
# main.py, requirements.txt and the package's wheel built from this checkout (plus any
# local model files the settings name), never the tests and benchmarks.
#
#   ./deploy.sh NAME --region us-central1 --origin gs://b/model \
#       --package-uris gs://b/staging/my_custom_code-0.1.tar.gz \
#       --prediction-class predictor.MyPredictor
#
# Run ./deploy.sh --help for every flag. --dry-run prints the gcloud command instead.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: ./deploy.sh NAME --region REGION (--origin URI | --forward-to NAME | --models URI) [flags]

What to serve (the flags of `gcloud ai-platform versions create`, plus two):
  --origin URI              model directory: gs://bucket/prefix (or a folder inside this directory)
  --package-uris URIS       comma-separated .tar.gz, .zip or .whl packages
  --prediction-class CLASS  module.Class of your predictor
  --framework NAME          scikit-learn, xgboost, tensorflow or mlflow (no custom code);
                            the v1 API's SCIKIT_LEARN, XGBOOST, TENSORFLOW too
  --forward-to NAME         projects/P/models/M[/versions/V] or projects/P/locations/L/endpoints/E
  --api-endpoint URL        base URL for --forward-to
  --batch-size N            instances per forwarded call
  --models URI              a models file (gs:// or a file inside this directory)
  --model-name NAME, --version-name NAME
  --warmup                  load the model when an instance starts, not on its first request
  --env KEY=VALUE           any other CPR_* setting (repeatable)
  --extras LIST             the package's extras the models need: xgboost, tensorflow,
                            mlflow, frameworks (default: the --framework's own)

How it runs:
  --target functions|run    Cloud Functions (default) or a Cloud Run function
  --region REGION           required (or CLOUDSDK_FUNCTIONS_REGION)
  --project PROJECT         defaults to gcloud's configured project
  --runtime RUNTIME         default python311, the Python CI tests (Cloud Run: its base image)
  --memory SIZE             e.g. 2Gi; suggested from the model's size when unset
  --cpu N, --timeout SECONDS, --min-instances N, --max-instances N
  --concurrency N           requests per instance at once (also sets THREADS=N)
  --service-account EMAIL
  --allow-unauthenticated   let anyone call it (by default callers must authenticate)
  --dry-run                 stage the source, print its files and the gcloud command, deploy nothing
  --stage DIR               stage the source in DIR (empty or new) and keep it
  --wheel PATH              the package's wheel, built already (else built from this checkout)
EOF
}

fail() {
  echo "deploy.sh: $*" >&2
  exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The default runtime is the Python the tests run on (3.11): nothing else is tested.
name="" region="${CLOUDSDK_FUNCTIONS_REGION:-}" project="" runtime="python311"
origin="" packages="" prediction_class="" framework="" forward_to="" api_endpoint=""
batch_size="" models="" model_name="" version_name="" warmup=""
memory="" cpu="" timeout="" min_instances="" max_instances="" concurrency=""
service_account="" allow_unauthenticated="" dry_run="" target="functions"
stage="" wheel="" extras=""
extra_env=()

value() {
  # The value after a flag, refusing a missing one.
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || fail "$1 needs a value"
  printf '%s' "$2"
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --region) region="$(value "$@")"; shift ;;
    --project) project="$(value "$@")"; shift ;;
    --runtime) runtime="$(value "$@")"; shift ;;
    --origin) origin="$(value "$@")"; shift ;;
    --package-uris) packages="$(value "$@")"; shift ;;
    --prediction-class) prediction_class="$(value "$@")"; shift ;;
    --framework) framework="$(value "$@")"; shift ;;
    --forward-to) forward_to="$(value "$@")"; shift ;;
    --api-endpoint) api_endpoint="$(value "$@")"; shift ;;
    --batch-size) batch_size="$(value "$@")"; shift ;;
    --models) models="$(value "$@")"; shift ;;
    --model-name) model_name="$(value "$@")"; shift ;;
    --version-name) version_name="$(value "$@")"; shift ;;
    --warmup) warmup="true" ;;
    --env) extra_env+=("$(value "$@")"); shift ;;
    --memory) memory="$(value "$@")"; shift ;;
    --cpu) cpu="$(value "$@")"; shift ;;
    --timeout) timeout="$(value "$@")"; shift ;;
    --min-instances) min_instances="$(value "$@")"; shift ;;
    --max-instances) max_instances="$(value "$@")"; shift ;;
    --concurrency) concurrency="$(value "$@")"; shift ;;
    --service-account) service_account="$(value "$@")"; shift ;;
    --allow-unauthenticated) allow_unauthenticated="true" ;;
    --dry-run) dry_run="true" ;;
    --target) target="$(value "$@")"; shift ;;
    --stage) stage="$(value "$@")"; shift ;;
    --wheel) wheel="$(value "$@")"; shift ;;
    --extras) extras="$(value "$@")"; shift ;;
    --*) fail "unknown flag $1; see ./deploy.sh --help" ;;
    *)
      [[ -z "$name" ]] || fail "one function NAME only; got $name and $1"
      name="$1"
      ;;
  esac
  shift
done

# Checks, before anything reaches gcloud.
[[ -n "$name" ]] || fail "give the function's NAME first; see ./deploy.sh --help"
[[ "$name" =~ ^[a-z][a-z0-9-]{0,61}[a-z0-9]$ ]] \
  || fail "NAME must be lowercase letters, digits and hyphens, starting with a letter; got '$name'"
[[ -n "$region" ]] || fail "give --region (such as us-central1) or set CLOUDSDK_FUNCTIONS_REGION"
[[ "$target" == functions || "$target" == run ]] \
  || fail "--target must be functions (Cloud Functions) or run (a Cloud Run function); got '$target'"
[[ -z "$wheel" || ( "$wheel" == *.whl && -f "$wheel" ) ]] \
  || fail "--wheel must be a built .whl file; got '$wheel'"
if [[ -z "$origin" && -n "$packages$prediction_class$framework" ]]; then
  fail "--package-uris, --prediction-class and --framework go with --origin"
fi
sources=0
for given in "$origin" "$forward_to" "$models"; do
  [[ -z "$given" ]] || sources=$((sources + 1))
done
[[ $sources -gt 0 ]] || fail "give --origin (a model directory), --forward-to (a deployed model) or --models (a models file)"
[[ $sources -eq 1 ]] || fail "give only one of --origin, --forward-to and --models"

check_uri() {
  # A gs:// URI must be well formed; anything else must lie inside this directory,
  # the only local files the deployment uploads.
  local flag="$1" uri="$2"
  if [[ "$uri" == gs://* ]]; then
    [[ "$uri" =~ ^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$ ]] \
      || fail "$flag must be gs://bucket/path with a valid bucket name; got '$uri'"
  elif [[ "$uri" == *://* ]]; then
    fail "$flag must be a gs:// URI or a path inside this directory; got '$uri'"
  else
    local full
    full="$(cd "$here" && realpath -m -- "$uri")"
    [[ "$full" == "$here"/* ]] \
      || fail "$flag '$uri' is outside this directory, so it would not be uploaded; copy it to Cloud Storage and give its gs:// URI"
    [[ -e "$full" ]] || fail "$flag '$uri' does not exist"
  fi
}

[[ -z "$origin" ]] || check_uri --origin "$origin"
if [[ -n "$packages" ]]; then
  IFS=',' read -r -a package_list <<<"$packages"
  for package in "${package_list[@]}"; do
    [[ "$package" =~ \.(tar\.gz|tgz|zip|whl)$ ]] \
      || fail "--package-uris must list .tar.gz, .zip or .whl packages; got '$package'"
    check_uri --package-uris "$package"
  done
fi
if [[ -n "$prediction_class" ]]; then
  [[ "$prediction_class" =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$ ]] \
    || fail "--prediction-class must be module.Class, like predictor.MyPredictor; got '$prediction_class'"
fi
if [[ -n "$framework" ]]; then
  # Any spelling AI Platform took: gcloud's scikit-learn, the v1 API's SCIKIT_LEARN, any case.
  spelled="${framework,,}"
  case "${spelled//_/-}" in
    scikit-learn | xgboost | tensorflow | mlflow)
      [[ -z "$prediction_class" ]] || fail "give --prediction-class or --framework, not both" ;;
    framework-unspecified) ;;
    *) fail "--framework must be scikit-learn, xgboost, tensorflow or mlflow; got '$framework' (any case is taken, and '_' for '-' as in the v1 API's SCIKIT_LEARN)" ;;
  esac
fi
if [[ -n "$forward_to" ]]; then
  [[ "$forward_to" =~ ^projects/[^/]+/(models/[^/]+(/versions/[^/]+)?|locations/[^/]+/endpoints/[^/]+)$ ]] \
    || fail "--forward-to must be projects/P/models/M[/versions/V] or projects/P/locations/L/endpoints/E; got '$forward_to'"
  if [[ "$forward_to" != */endpoints/* && -z "$api_endpoint" ]]; then
    fail "--forward-to names an AI Platform v1 model; ml.googleapis.com was shut down, so give --api-endpoint"
  fi
fi
[[ -z "$models" ]] || check_uri --models "$models"
for pair in "${extra_env[@]+"${extra_env[@]}"}"; do
  [[ "$pair" =~ ^CPR_[A-Z_]+=.*$ ]] || fail "--env takes CPR_NAME=value; got '$pair'"
done
for number in "$batch_size" "$min_instances" "$max_instances" "$concurrency"; do
  [[ -z "$number" || "$number" =~ ^[0-9]+$ ]] || fail "expected a whole number; got '$number'"
done

# Memory: on Cloud Functions /tmp is memory, so a model counts twice: its files in the
# cache, and the loaded model. Suggest twice the model plus 512 MiB for Python and the
# libraries, rounded up to the next size Cloud Functions offers.
model_bytes() {
  local total=0 size uri
  for uri in "$@"; do
    [[ -n "$uri" ]] || continue
    if [[ "$uri" == gs://* ]]; then
      size="$(gcloud storage du --summarize "$uri" 2>/dev/null | awk 'NR == 1 {print $1}')" || size=""
    else
      size="$(cd "$here" && du -sb -- "$uri" | awk '{print $1}')"
    fi
    [[ "$size" =~ ^[0-9]+$ ]] || return 1
    total=$((total + size))
  done
  echo "$total"
}

if [[ -n "$origin" ]]; then
  mib=0
  if bytes="$(model_bytes "$origin" "${package_list[@]+"${package_list[@]}"}")"; then
    needed=$((2 * bytes / 1048576 + 512))
    suggested=""
    for tier in 512 1024 2048 4096 8192 16384 32768; do
      if [[ $needed -le $tier ]]; then
        suggested=$tier
        break
      fi
    done
    [[ -n "$suggested" ]] || fail "the model is $((bytes / 1048576)) MiB: twice that does not fit the largest function (32Gi); serve it with --forward-to"
    if [[ $suggested -ge 1024 ]]; then label="$((suggested / 1024))Gi"; else label="${suggested}Mi"; fi
    echo "deploy.sh: the model and packages are $((bytes / 1048576)) MiB; suggested memory $label (counted twice: files in /tmp and loaded, plus 512Mi)" >&2
    if [[ -z "$memory" ]]; then
      memory="$label"
    else
      case "$memory" in
        *Gi) mib=$((${memory%Gi} * 1024)) ;;
        *Mi) mib=${memory%Mi} ;;
      esac
      if [[ $mib -gt 0 && $mib -lt $suggested ]]; then
        echo "deploy.sh: warning: --memory $memory is below the suggested $label" >&2
      fi
    fi
  elif [[ -z "$memory" ]]; then
    memory="1Gi"
    echo "deploy.sh: could not measure the model's size; using --memory 1Gi (set --memory to choose)" >&2
  fi
fi

# The environment, joined with ';' since package lists hold commas (gcloud's ^;^ syntax).
env_vars=()
add_env() { [[ -z "$2" ]] || env_vars+=("$1=$2"); }
add_env CPR_ORIGIN "$origin"
add_env CPR_PACKAGE_URIS "$packages"
add_env CPR_PREDICTION_CLASS "$prediction_class"
add_env CPR_FRAMEWORK "$framework"
add_env CPR_FORWARD_TO "$forward_to"
add_env CPR_API_ENDPOINT "$api_endpoint"
add_env CPR_BATCH_SIZE "$batch_size"
add_env CPR_MODELS "$models"
add_env CPR_MODEL_NAME "$model_name"
add_env CPR_VERSION_NAME "$version_name"
add_env CPR_WARMUP "$warmup"
add_env THREADS "$concurrency"
env_vars+=("${extra_env[@]+"${extra_env[@]}"}")
joined="$(IFS=';'; echo "${env_vars[*]}")"
for pair in "${env_vars[@]}"; do
  [[ "$pair" != *";"* ]] || fail "a setting may not contain ';': $pair"
done

# The function's source, staged apart from this repository: main.py and requirements.txt
# (written by the package's own `init`), the wheel, and the local files the settings name,
# at the same relative paths.
if [[ -n "$stage" ]]; then
  mkdir -p "$stage"
  [[ -z "$(ls -A "$stage")" ]] || fail "--stage $stage is not empty"
  stage="$(cd "$stage" && pwd)"
else
  stage="$(mktemp -d "${TMPDIR:-/tmp}/cpr-function-source.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
fi
python="${PYTHON:-python3}"
if [[ -z "$wheel" ]]; then
  "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$stage/.wheel" "$here" >&2 \
    || fail "building the package's wheel failed: $python -m pip wheel --no-deps $here"
  wheel="$(echo "$stage"/.wheel/cpr_function-*.whl)"
fi
if [[ -z "$extras" && -n "$framework" ]]; then
  case "${spelled//_/-}" in xgboost | tensorflow | mlflow) extras="${spelled//_/-}" ;; esac
fi
PYTHONPATH="$here" "$python" -m cpr_function init "$stage" --wheel "$wheel" --extras "$extras" >/dev/null \
  || fail "writing main.py and requirements.txt failed (see above)"
rm -rf "$stage/.wheel"
for uri in "$origin" "$models" "${package_list[@]+"${package_list[@]}"}"; do
  [[ -n "$uri" && "$uri" != gs://* ]] || continue
  relative="$(cd "$here" && realpath -m --relative-to="$here" -- "$uri")"
  mkdir -p "$stage/$(dirname "$relative")"
  cp -R "$here/$relative" "$stage/$relative"
done

if [[ "$target" == run ]]; then
  command=(gcloud run deploy "$name" --source "$stage" --function predict --base-image "$runtime"
    --region "$region" "--set-env-vars=^;^$joined")
else
  command=(gcloud functions deploy "$name" --gen2 --runtime "$runtime" --region "$region"
    --trigger-http --entry-point predict --source "$stage" "--set-env-vars=^;^$joined")
fi
[[ -z "$project" ]] || command+=(--project "$project")
[[ -z "$memory" ]] || command+=(--memory "$memory")
[[ -z "$cpu" ]] || command+=(--cpu "$cpu")
[[ -z "$timeout" ]] || command+=(--timeout "$timeout")
[[ -z "$min_instances" ]] || command+=(--min-instances "$min_instances")
[[ -z "$max_instances" ]] || command+=(--max-instances "$max_instances")
[[ -z "$concurrency" ]] || command+=(--concurrency "$concurrency")
[[ -z "$service_account" ]] || command+=(--service-account "$service_account")
if [[ -n "$allow_unauthenticated" ]]; then
  command+=(--allow-unauthenticated)
else
  command+=(--no-allow-unauthenticated)
fi

if [[ -n "$dry_run" ]]; then
  echo "deploy.sh: the source, staged in $stage:" >&2
  (cd "$stage" && find . -type f | sed 's|^\./|  |' | sort) >&2
  echo "deploy.sh: requirements.txt: $(cat "$stage/requirements.txt")" >&2
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
"${command[@]}"
