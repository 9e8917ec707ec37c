#!/usr/bin/env bash
# Deploy the Graph user export to Azure with the az CLI: resource group, app registration with
# Microsoft Graph User.Read.All (application) and admin consent, the Bicep in infra/, the client
# secret (piped straight into Key Vault), and the function code. Safe to run again: every step
# first looks at what exists and changes nothing that is already in place.
#
# The same steps, one command at a time, are in infra/README.md.

set -euo pipefail

readonly GRAPH_API_ID='00000003-0000-0000-c000-000000000000'       # Microsoft Graph
readonly USER_READ_ALL_ROLE='df021288-bdef-4463-88db-98f22de89214' # User.Read.All (application)
readonly DEPLOYMENT_NAME='graph-export'

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

RETRY_DELAY="${DEPLOY_RETRY_DELAY:-10}" # seconds between retries while Entra ID / RBAC changes propagate
RETRY_COUNT="${DEPLOY_RETRY_COUNT:-30}"

resource_group=''
location=''
app_name='graph-user-export'
name_prefix='graphexp'
alert_email=''
secret_years=1
rotate_secret=false
skip_publish=false
pending_consent=false

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh --resource-group NAME [options]

Deploys the Graph user export into one resource group and publishes the function code.
Idempotent: run it again to apply changes; it reuses what already exists.

Required:
  -g, --resource-group NAME   Resource group to deploy into (created if missing).

Options:
  -l, --location REGION       Region for a new resource group (must offer Flex Consumption,
                              see: az functionapp list-flexconsumption-locations).
                              Default: the existing group's region.
  -n, --app-name NAME         Display name of the Entra ID app registration
                              (default: graph-user-export). Reused if it exists.
  -p, --prefix PREFIX         Resource name prefix, 3-10 lowercase letters/digits (default: graphexp).
  -e, --alert-email ADDRESS   E-mail notified when an export fails or none succeeded in 26 hours.
      --secret-years N        Lifetime of a new client secret in years (default: 1).
      --rotate-secret         Create a new client secret even if Key Vault already holds one.
      --skip-publish          Provision and configure only; do not upload the code.
  -h, --help                  Show this help.

Needs: az CLI (logged in with `az login`; Contributor + User Access Administrator on the
resource group, and an Entra ID role that can grant admin consent, e.g. Privileged Role
Administrator), git and zip (or python3) for packaging.

The client secret never touches the disk or the terminal: it is piped from
`az ad app credential reset` into `az keyvault secret set --file /dev/stdin`.
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# retry DESCRIPTION COMMAND...: run COMMAND until it succeeds (Entra ID and RBAC are eventually consistent).
# RETRIES (default RETRY_COUNT) bounds the attempts.
retry() {
  local what="$1" attempt=1 attempts="${RETRIES:-$RETRY_COUNT}"
  shift
  until "$@"; do
    if ((attempt >= attempts)); then
      return 1
    fi
    info "$what: not yet, retrying in ${RETRY_DELAY}s ($attempt/$attempts)"
    sleep "$RETRY_DELAY"
    attempt=$((attempt + 1))
  done
}

# future_date YEARS: UTC timestamp YEARS from now (GNU date, then BSD/macOS date).
future_date() {
  date -u -d "+$1 years" '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null || date -u -v "+$1y" '+%Y-%m-%dT%H:%M:%SZ'
}

parse_args() {
  while (($#)); do
    case "$1" in
      -g | --resource-group) resource_group="${2:?$1 needs a value}"; shift 2 ;;
      -l | --location) location="${2:?$1 needs a value}"; shift 2 ;;
      -n | --app-name) app_name="${2:?$1 needs a value}"; shift 2 ;;
      -p | --prefix) name_prefix="${2:?$1 needs a value}"; shift 2 ;;
      -e | --alert-email) alert_email="${2:?$1 needs a value}"; shift 2 ;;
      --secret-years) secret_years="${2:?$1 needs a value}"; shift 2 ;;
      --rotate-secret) rotate_secret=true; shift ;;
      --skip-publish) skip_publish=true; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  [[ -n "$resource_group" ]] || die "--resource-group is required (see --help)"
  [[ "$name_prefix" =~ ^[a-z0-9]{3,10}$ ]] || die "--prefix must be 3-10 lowercase letters or digits, got '$name_prefix'"
  [[ "$secret_years" =~ ^[1-9][0-9]?$ ]] || die "--secret-years must be a whole number of years, got '$secret_years'"
}

preflight() {
  log "Checking tools and sign-in"
  command -v az >/dev/null || die "the az CLI is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
  if ! $skip_publish; then
    command -v git >/dev/null || die "git is needed to package the code (or pass --skip-publish)"
    command -v zip >/dev/null || command -v python3 >/dev/null || die "zip or python3 is needed to package the code"
  fi
  az account show -o none 2>/dev/null || die "not signed in: run 'az login' (and 'az account set -s <subscription>')"
  tenant_id="$(az account show --query tenantId -o tsv)"
  subscription_id="$(az account show --query id -o tsv)"
  info "tenant $tenant_id, subscription $subscription_id"
}

ensure_resource_group() {
  log "Resource group $resource_group"
  local existing
  existing="$(az group show --name "$resource_group" --query location -o tsv 2>/dev/null || true)"
  if [[ -n "$existing" ]]; then
    info "exists in $existing"
    if [[ -n "$location" && "$location" != "$existing" ]]; then
      warn "--location $location ignored: the group already exists in $existing"
    fi
  else
    [[ -n "$location" ]] || die "resource group $resource_group does not exist: pass --location to create it"
    az group create --name "$resource_group" --location "$location" -o none
    info "created in $location"
  fi
}

ensure_app_registration() {
  log "App registration '$app_name'"
  local ids count
  ids="$(az ad app list --display-name "$app_name" --query '[].appId' -o tsv)"
  count="$(printf '%s' "$ids" | grep -c . || true)"
  if ((count > 1)); then
    die "$count app registrations are named '$app_name': pass --app-name with a unique name"
  elif ((count == 1)); then
    client_id="$ids"
    info "reusing existing registration, client id $client_id"
  else
    client_id="$(az ad app create --display-name "$app_name" --sign-in-audience AzureADMyOrg --query appId -o tsv)"
    info "created, client id $client_id"
  fi

  sp_id="$(az ad sp list --filter "appId eq '$client_id'" --query '[].id' -o tsv)"
  if [[ -z "$sp_id" ]]; then
    sp_id="$(retry "creating the service principal" az ad sp create --id "$client_id" --query id -o tsv)"
    info "service principal created"
  else
    info "service principal exists"
  fi

  local granted
  granted="$(az ad app permission list --id "$client_id" \
    --query "[?resourceAppId=='$GRAPH_API_ID'].resourceAccess[].id" -o tsv)"
  if grep -qx "$USER_READ_ALL_ROLE" <<<"$granted"; then
    info "Microsoft Graph User.Read.All (application) already requested"
  else
    az ad app permission add --id "$client_id" --api "$GRAPH_API_ID" \
      --api-permissions "$USER_READ_ALL_ROLE=Role" -o none
    info "requested Microsoft Graph User.Read.All (application)"
  fi

  local consented
  consented="$(az rest --method GET \
    --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$sp_id/appRoleAssignments" \
    --query "value[?appRoleId=='$USER_READ_ALL_ROLE'].id" -o tsv)"
  if [[ -n "$consented" ]]; then
    info "admin consent already granted"
  elif RETRIES=3 retry "granting admin consent" az ad app permission admin-consent --id "$client_id"; then
    info "admin consent granted"
  else
    pending_consent=true
    warn "could not grant admin consent (it needs e.g. Privileged Role Administrator). Ask an administrator to run:"
    warn "  az ad app permission admin-consent --id $client_id"
    warn "Exports fail with 403 Authorization_RequestDenied until then."
  fi
}

deployer_identity() {
  # The signed-in user (or service principal) gets Key Vault Secrets Officer to store the client secret.
  local kind
  kind="$(az account show --query user.type -o tsv)"
  if [[ "$kind" == "servicePrincipal" ]]; then
    deployer_type='ServicePrincipal'
    deployer_id="$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv)"
  else
    deployer_type='User'
    deployer_id="$(az ad signed-in-user show --query id -o tsv)"
  fi
}

deploy_bicep() {
  log "Deploying infra/main.bicep (a few minutes; unchanged resources are left as they are)"
  deployer_identity
  export GRAPH_EXPORT_CLIENT_ID="$client_id"
  export GRAPH_EXPORT_NAME_PREFIX="$name_prefix"
  export GRAPH_EXPORT_ALERT_EMAIL="$alert_email"
  export GRAPH_EXPORT_DEPLOYER_ID="$deployer_id"
  export GRAPH_EXPORT_DEPLOYER_TYPE="$deployer_type"
  az deployment group create --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --parameters "$SCRIPT_DIR/main.bicepparam" -o none

  local outputs
  outputs="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --query '[properties.outputs.functionAppName.value, properties.outputs.keyVaultName.value, properties.outputs.clientSecretName.value, properties.outputs.exportStorageAccountName.value, properties.outputs.exportContainerName.value]' \
    -o tsv)"
  IFS=$'\t\n' read -r -d '' function_app key_vault secret_name export_account export_container <<<"$outputs" || true
  [[ -n "$function_app" && -n "$key_vault" && -n "$secret_name" ]] ||
    die "could not read the deployment outputs of $DEPLOYMENT_NAME in $resource_group"
  info "function app $function_app, key vault $key_vault, exports in $export_account/$export_container"
}

store_client_secret() {
  log "Client secret in Key Vault $key_vault (secret '$secret_name')"
  # The Secrets Officer role assigned by the deployment can take a few minutes to reach the vault.
  retry "waiting for access to the vault" az keyvault secret list --vault-name "$key_vault" -o none ||
    die "no access to the secrets of $key_vault: you need 'Key Vault Secrets Officer' on it"

  local existing
  existing="$(az keyvault secret list --vault-name "$key_vault" --query "[?name=='$secret_name'].id" -o tsv)"
  if [[ -n "$existing" ]] && ! $rotate_secret; then
    info "already set; keeping it (pass --rotate-secret for a new one)"
    return
  fi

  local expires
  expires="$(future_date "$secret_years")"
  # The password goes from Entra ID to Key Vault through a pipe: never a variable, file, argument or echo.
  az ad app credential reset --id "$client_id" --append --display-name "graph-export $key_vault" \
    --end-date "$expires" --query password -o tsv |
    tr -d '\r\n' |
    az keyvault secret set --vault-name "$key_vault" --name "$secret_name" --file /dev/stdin \
      --encoding utf-8 --expires "$expires" --content-type "client secret of app $client_id" -o none
  info "new client secret stored (expires $expires)"
  if [[ -n "$existing" ]]; then
    info "older client secrets of the app stay valid until they expire: list them with"
    info "  az ad app credential list --id $client_id"
  fi
}

# package ZIP: the repository's files that git sees (tracked, or untracked and not .gitignore'd),
# minus those matched by .funcignore (gitignore syntax, so git applies it).
package() {
  local zip_path="$1" list
  list="$(dirname "$zip_path")/files.txt"
  (
    cd "$REPO_ROOT"
    git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$REPO_ROOT is not a git work tree"
    local ignore=()
    [[ -f .funcignore ]] && ignore=(--exclude-from=.funcignore)
    {
      comm -23 <(git ls-files --cached | sort) <(git ls-files --cached --ignored "${ignore[@]}" | sort)
      git ls-files --others --exclude-standard "${ignore[@]}"
    } | sort -u | while IFS= read -r f; do [[ -f "$f" ]] && printf '%s\n' "$f"; done >"$list"
    [[ -s "$list" ]] || die "nothing to package in $REPO_ROOT"
    grep -qx 'function_app.py' "$list" || die "function_app.py is missing from the package"
    grep -qx 'host.json' "$list" || die "host.json is missing from the package"
    if command -v zip >/dev/null; then
      zip -q -X "$zip_path" -@ <"$list"
    else
      python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for name in sys.stdin.read().splitlines():
        z.write(name)' "$zip_path" <"$list"
    fi
    info "$(wc -l <"$list" | tr -d ' ') files packaged"
  )
}

publish() {
  log "Publishing the code to $function_app (remote build installs requirements.txt)"
  local workdir
  workdir="$(mktemp -d)"
  # shellcheck disable=SC2064 # expand now: workdir is local
  trap "rm -rf '$workdir'" EXIT
  package "$workdir/app.zip"
  retry "publishing" az functionapp deployment source config-zip --resource-group "$resource_group" \
    --name "$function_app" --src "$workdir/app.zip" --build-remote true -o none ||
    die "publishing failed: see the deployment log in the portal (Deployment Center) and retry"
  info "published"
}

summary() {
  log "Done"
  info "function app:   $function_app (resource group $resource_group)"
  info "client id:      $client_id"
  info "key vault:      $key_vault (secret '$secret_name')"
  info "exports:        container '$export_container' in storage account $export_account"
  if $pending_consent; then
    warn "admin consent is still missing: az ad app permission admin-consent --id $client_id"
  fi
}

main() {
  parse_args "$@"
  preflight
  ensure_resource_group
  ensure_app_registration
  deploy_bicep
  store_client_secret
  if $skip_publish; then
    log "Skipping code publishing (--skip-publish)"
  else
    publish
  fi
  summary
}

main "$@"
