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

What to serve (the flags of `gcloud ai-platform versions create`, plus a few):
  --origin URI              model directory: gs://bucket/prefix (or a folder inside this directory)
  --package-uris URIS       comma-separated .tar.gz, .zip or .whl packages
  --prediction-class CLASS  module.Class of your predictor
  --framework NAME          scikit-learn, xgboost, tensorflow or mlflow (no custom code);
                            the v1 API's SCIKIT_LEARN, XGBOOST, TENSORFLOW too
  --forward-to NAME         projects/P/models/M[/versions/V] or projects/P/locations/L/endpoints/E
  --api-endpoint URL        base URL for --forward-to
  --batch-size N            instances per forwarded call
  --models URI              a models file (gs:// or a file inside this directory)
  --model-name NAME, --version-name NAME (also --model, --version): the names clients
                            call, as in projects/P/models/NAME/versions/NAME:predict
  --description TEXT        the version's description, as versions.get shows it
  --labels KEY=VALUE,...    labels on the function (gcloud's --update-labels)
  --runtime-version V, --python-version V
                            accepted: says what those runtimes had, and what serves their models
  --machine-type TYPE       an AI Platform machine type, as --cpu and --memory
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
  --service-account EMAIL   the identity it runs as; granted read access to each gs://
                            bucket the settings name
  --auth iam|google         who checks callers (docs/authentication.md): iam (default),
                            Cloud Run's IAM layer, callers sending ID tokens; google, the
                            function itself, admitting the access tokens Google's clients send
  --invoker PRINCIPAL       iam: grant the invoker role to user:EMAIL, serviceAccount:EMAIL,
                            group:EMAIL or domain:DOMAIN (repeatable)
  --allow PRINCIPAL         google: admit user:EMAIL, serviceAccount:EMAIL or domain:DOMAIN
                            (repeatable); deploys open at the IAM layer
  --allow-unauthenticated   let anyone call it (by default callers must authenticate)
  --rollback-to REVISION    deploy nothing: send all traffic back to an earlier revision
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
stage="" wheel="" extras="" auth="iam" description="" labels=""
runtime_version="" python_version="" machine_type="" rollback_to=""
extra_env=() invokers=() allowed=()

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
    --model-name | --model) model_name="$(value "$@")"; shift ;;
    --version-name | --version) version_name="$(value "$@")"; shift ;;
    --description) description="$(value "$@")"; shift ;;
    --labels) labels="$(value "$@")"; shift ;;
    --runtime-version) runtime_version="$(value "$@")"; shift ;;
    --python-version) python_version="$(value "$@")"; shift ;;
    --machine-type) machine_type="$(value "$@")"; shift ;;
    --auth) auth="$(value "$@")"; shift ;;
    --rollback-to) rollback_to="$(value "$@")"; shift ;;
    --invoker) invokers+=("$(value "$@")"); shift ;;
    --allow) allowed+=("$(value "$@")"); shift ;;
    --staging-bucket) fail "--staging-bucket is not needed: deploy.sh stages and uploads the source itself; give --package-uris as gs:// URIs or files inside this directory" ;;
    --config) fail "--config (a version's YAML) is not read: give its fields as flags (--origin, --package-uris, --prediction-class, --framework, --machine-type, --description, --labels)" ;;
    --accelerator) fail "--accelerator: Cloud Functions have no GPUs; serve the model on Vertex AI and deploy with --forward-to" ;;
    --explanation-method | --num-paths | --num-integrated-gradients-steps) fail "$1: explanations are not served; deploy the model on Vertex AI with explanations and use --forward-to" ;;
    --async) fail "--async is not taken: gcloud functions deploy waits for the deployment; run deploy.sh in the background instead" ;;
    --enable-logging | --enable-console-logging) echo "deploy.sh: $1 is not needed: every request is logged to Cloud Logging (docs/operations.md)" >&2 ;;
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
# Rolling back deploys nothing: all traffic goes to an earlier revision of the function's
# Cloud Run service (a 2nd gen function is one, under the same name).
if [[ -n "$rollback_to" ]]; then
  [[ "$rollback_to" =~ ^[a-z][a-z0-9-]*$ ]] \
    || fail "--rollback-to takes a revision name, as gcloud run revisions list --service $name shows them; got '$rollback_to'"
  rollback=(gcloud run services update-traffic "$name" --region "$region" --to-revisions "$rollback_to=100")
  [[ -z "$project" ]] || rollback+=(--project "$project")
  if [[ -n "$dry_run" ]]; then
    printf -v line '%q ' "${rollback[@]}"
    echo "${line% }"
  else
    "${rollback[@]}" >&2
  fi
  exit 0
fi
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

# Who may call. Principals are IAM members; a bare email is a user's, or a service
# account's when it ends in .gserviceaccount.com.
member() {
  local flag="$1" given="$2"
  if [[ "$given" == *.gserviceaccount.com && "$given" != *:* ]]; then
    given="serviceAccount:$given"
  fi
  [[ "$given" == *:* ]] || given="user:$given"
  [[ "$given" =~ ^(user|serviceAccount|group):[^@[:space:]]+@[^@[:space:]]+$ || "$given" =~ ^domain:[a-z0-9.-]+$ ]] \
    || fail "$flag takes user:EMAIL, serviceAccount:EMAIL, group:EMAIL or domain:DOMAIN; got '$2'"
  printf '%s' "$given"
}
case "$auth" in
  iam)
    [[ ${#allowed[@]} -eq 0 ]] || fail "--allow goes with --auth google (the function checks callers); under --auth iam grant callers the invoker role with --invoker"
    [[ -z "$allow_unauthenticated" || ${#invokers[@]} -eq 0 ]] || fail "--invoker and --allow-unauthenticated contradict each other: with the latter anyone may call"
    ;;
  google)
    [[ ${#invokers[@]} -eq 0 ]] || fail "--invoker goes with --auth iam; under --auth google the function is open at the IAM layer and admits the principals given with --allow"
    [[ ${#allowed[@]} -gt 0 ]] || fail "--auth google needs --allow PRINCIPAL (repeatable): the callers the function admits"
    ;;
  *) fail "--auth must be iam (Cloud Run's IAM layer checks ID tokens) or google (the function checks Google's access and ID tokens); got '$auth'" ;;
esac
members=()
for principal in "${invokers[@]+"${invokers[@]}"}"; do members+=("$(member --invoker "$principal")"); done
allow_list=()
for principal in "${allowed[@]+"${allowed[@]}"}"; do
  principal="$(member --allow "$principal")"
  [[ "$principal" != group:* ]] || fail "--allow $principal: a token does not show group membership; list the members, or use --auth iam --invoker $principal"
  allow_list+=("$principal")
done

# AI Platform's machine types, as the CPU and memory Cloud Functions offer (8 vCPU and
# 32Gi at most); --cpu and --memory given win.
if [[ -n "$machine_type" ]]; then
  case "$machine_type" in
    mls1-c1-m2) shape="1 2Gi" ;;
    mls1-c4-m2) shape="4 4Gi" ;;
    n1-standard-2) shape="2 8Gi" ;;
    n1-standard-4) shape="4 16Gi" ;;
    n1-standard-8) shape="8 32Gi" ;;
    n1-highmem-2) shape="2 16Gi" ;;
    n1-highmem-4) shape="4 32Gi" ;;
    n1-highcpu-2) shape="2 2Gi" ;;
    n1-highcpu-4) shape="4 4Gi" ;;
    n1-highcpu-8) shape="8 8Gi" ;;
    n1-standard-16 | n1-standard-32 | n1-highmem-8 | n1-highmem-16 | n1-highmem-32 | n1-highcpu-16 | n1-highcpu-32)
      fail "--machine-type $machine_type is larger than any function (8 vCPU, 32Gi); serve the model on Vertex AI and deploy with --forward-to" ;;
    *) fail "--machine-type must be one of AI Platform's: mls1-c1-m2, mls1-c4-m2, n1-standard-2/4/8, n1-highmem-2/4, n1-highcpu-2/4/8; got '$machine_type'" ;;
  esac
  read -r shape_cpu shape_memory <<<"$shape"
  echo "deploy.sh: --machine-type $machine_type is --cpu $shape_cpu --memory $shape_memory here (the memory rounded up to a size Cloud Functions offers)" >&2
  [[ -n "$cpu" ]] || cpu="$shape_cpu"
  [[ -n "$memory" ]] || memory="$shape_memory"
fi

# AI Platform's runtime versions: what their libraries were, and what serves their models.
if [[ -n "$runtime_version" ]]; then
  case "$runtime_version" in
    1.*) had="TensorFlow $runtime_version, scikit-learn 0.19 to 0.20, XGBoost 0.7x to 0.8x, Python 2.7 or 3.5 to 3.7" ;;
    2.*) had="TensorFlow $runtime_version, scikit-learn 0.22 to 1.0, XGBoost 0.90 to 1.x, Python 3.7" ;;
    *) fail "--runtime-version must be one of AI Platform's (1.13 to 1.15, 2.1 to 2.11); got '$runtime_version'" ;;
  esac
  echo "deploy.sh: --runtime-version $runtime_version had $had. The function runs $runtime and today's libraries (requirements.txt); model files those releases wrote are read through the compatibility shims, and python -m cpr_function check shows each one used (docs/compatibility.md)" >&2
fi
if [[ -n "$python_version" ]]; then
  case "$python_version" in
    2.7) fail "--python-version 2.7: Python 2 code needs porting to Python 3 first; the function runs $runtime (docs/compatibility.md)" ;;
    3.*) echo "deploy.sh: --python-version $python_version: the function runs $runtime; Python 3 routines run unchanged, and pickles of that Python load" >&2 ;;
    *) fail "--python-version must be 2.7, 3.5 or 3.7 as AI Platform took it; got '$python_version'" ;;
  esac
fi
if [[ -n "$labels" ]]; then
  [[ "$labels" =~ ^[a-z][a-z0-9_-]{0,62}=[a-z0-9_-]{0,63}(,[a-z][a-z0-9_-]{0,62}=[a-z0-9_-]{0,63})*$ ]] \
    || fail "--labels takes KEY=VALUE,... with lowercase letters, digits, '_' and '-', keys starting with a letter; got '$labels'"
fi

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

# The function runs one worker process a vCPU, each loading its own copy of the model
# (docs/configuration.md): the vCPUs an instance of MiB memory gets, by --cpu, or Cloud
# Functions' defaults for its memory (Cloud Run's default is one).
workers_for() {
  if [[ -n "$cpu" ]]; then
    awk -v c="$cpu" 'BEGIN { n = int(c); print (n < 1 ? 1 : n) }'
  elif [[ "$target" == run || $1 -lt 4096 ]]; then
    echo 1
  elif [[ $1 -lt 16384 ]]; then
    echo 2
  elif [[ $1 -lt 32768 ]]; then
    echo 4
  else
    echo 8
  fi
}

if [[ -n "$origin" ]]; then
  mib=0
  if bytes="$(model_bytes "$origin" "${package_list[@]+"${package_list[@]}"}")"; then
    model_mib=$((bytes / 1048576))
    suggested=""
    for tier in 512 1024 2048 4096 8192 16384 32768; do
      workers=$(workers_for $tier)
      needed=$((model_mib + workers * (model_mib + 512)))
      if [[ $needed -le $tier ]]; then
        suggested=$tier
        break
      fi
    done
    [[ -n "$suggested" ]] || fail "the model is $model_mib MiB: its files and a loaded copy for each worker process do not fit the largest function (32Gi); serve it with --forward-to"
    if [[ $suggested -ge 1024 ]]; then label="$((suggested / 1024))Gi"; else label="${suggested}Mi"; fi
    echo "deploy.sh: the model and packages are $model_mib MiB; suggested memory $label (the files in /tmp once, then loaded in each of $workers worker process(es) with 512Mi each)" >&2
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
add_env CPR_DESCRIPTION "$description"
if [[ "$auth" == google ]]; then
  add_env CPR_AUTH google
  add_env CPR_ALLOWED_PRINCIPALS "$(IFS=','; echo "${allow_list[*]}")"
fi
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
[[ -z "$labels" ]] || command+=(--update-labels "$labels")
if [[ "$auth" == google ]]; then
  echo "deploy.sh: --auth google: deploying open at the IAM layer (--allow-unauthenticated); the function itself admits only Google credentials of: ${allow_list[*]}" >&2
  command+=(--allow-unauthenticated)
elif [[ -n "$allow_unauthenticated" ]]; then
  command+=(--allow-unauthenticated)
else
  command+=(--no-allow-unauthenticated)
fi

# Before the deployment: the --service-account may read each bucket the settings name.
# After it: the invoker role for each --invoker, then the function's URL.
scope=(--region "$region")
[[ -z "$project" ]] || scope+=(--project "$project")
before=() after=()
if [[ -n "$service_account" ]]; then
  buckets=()
  for uri in "$origin" "$models" "${package_list[@]+"${package_list[@]}"}"; do
    [[ "$uri" == gs://* ]] || continue
    bucket="${uri#gs://}"
    bucket="gs://${bucket%%/*}"
    [[ " ${buckets[*]+"${buckets[*]}"} " == *" $bucket "* ]] || buckets+=("$bucket")
  done
  for bucket in "${buckets[@]+"${buckets[@]}"}"; do
    before+=("gcloud storage buckets add-iam-policy-binding $bucket --member=serviceAccount:$service_account --role=roles/storage.objectViewer${project:+ --project $project}")
  done
fi
for principal in "${members[@]+"${members[@]}"}"; do
  if [[ "$target" == run ]]; then
    after+=("gcloud run services add-iam-policy-binding $name --member=$principal --role=roles/run.invoker ${scope[*]}")
  else
    after+=("gcloud functions add-invoker-policy-binding $name --member=$principal ${scope[*]}")
  fi
done
if [[ "$target" == run ]]; then
  url_command=(gcloud run services describe "$name" "${scope[@]}" --format "value(status.url)")
else
  url_command=(gcloud functions describe "$name" "${scope[@]}" --format "value(url)")
fi

# A command as a shell would take it back, on one line.
quoted() {
  local line
  printf -v line '%q ' "$@"
  echo "${line% }"
}

if [[ -n "$dry_run" ]]; then
  echo "deploy.sh: the source, staged in $stage:" >&2
  (cd "$stage" && find . -type f | sed 's|^\./|  |' | sort) >&2
  echo "deploy.sh: requirements.txt: $(cat "$stage/requirements.txt")" >&2
  for step in "${before[@]+"${before[@]}"}"; do
    echo "$step"
  done
  quoted "${command[@]}"
  for step in "${after[@]+"${after[@]}"}"; do
    echo "$step"
  done
  quoted "${url_command[@]}"
  exit 0
fi
# gcloud's own output goes to stderr: stdout carries only the URL, for FUNCTION_URL=$(...).
for step in "${before[@]+"${before[@]}"}"; do
  read -r -a words <<<"$step"
  # A deployer who may not change a shared bucket's policy can still deploy.
  "${words[@]}" >&2 || echo "deploy.sh: warning: could not run: $step; grant the function's service account roles/storage.objectViewer on that bucket" >&2
done
"${command[@]}" >&2
for step in "${after[@]+"${after[@]}"}"; do
  read -r -a words <<<"$step"
  "${words[@]}" >&2
done
url="$("${url_command[@]}")"
echo "deploy.sh: deployed; its URL (FUNCTION_URL in docs/migrate.md): $url" >&2
echo "$url"
