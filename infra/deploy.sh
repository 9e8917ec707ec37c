#!/usr/bin/env bash
# Deploy the Graph user export to Azure with the az CLI: resource group, app registration with
# Microsoft Graph User.Read.All (application) and admin consent, the Bicep in infra/, the app's
# credential (--credential: a client secret piped straight into Key Vault, a self-renewing Key Vault
# certificate registered on the app, or a federated credential trusting the function's user-assigned
# identity), and the function code. Safe to run again: every step first looks at what exists and
# changes nothing that is already in place.
#
# The same steps, one command at a time, are in infra/README.md.

set -euo pipefail

readonly GRAPH_API_ID='00000003-0000-0000-c000-000000000000'       # Microsoft Graph
readonly USER_READ_ALL_ROLE='df021288-bdef-4463-88db-98f22de89214' # User.Read.All (application)
readonly DEPLOYMENT_NAME='graph-export'
readonly CREDENTIAL_KINDS='secret certificate federated'

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
credential=''           # secret | certificate | federated; empty = the last deployment's, else secret
credential_source=''
secret_years=1
rotate_secret=false
rotate_certificate=false
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
  -e, --alert-email ADDRESS   E-mail notified when an export fails, none succeeded in 26 hours,
                              or the client secret or certificate expires within 30 days.
  -c, --credential KIND       How the app signs in to Entra ID (see "Choosing a credential" in README.md):
                                secret       a client secret in Key Vault (expires after --secret-years)
                                certificate  a self-signed Key Vault certificate that renews itself,
                                             its public key registered on the app registration
                                federated    a federated credential trusting the function's user-assigned
                                             managed identity: no secret anywhere, no Key Vault
                              Default: what the last deployment to the group used, else secret.
      --secret-years N        Lifetime of a new client secret in years (default: 1).
      --rotate-secret         Create a new client secret even if Key Vault already holds one.
      --rotate-certificate    Create a new version of the certificate now and register it.
      --skip-publish          Provision and configure only; do not upload the code.
  -h, --help                  Show this help.

Needs: az CLI (logged in with `az login`; Contributor + User Access Administrator on the
resource group, and an Entra ID role that can grant admin consent, e.g. Privileged Role
Administrator), git and zip (or python3) for packaging.

The client secret never touches the disk or the terminal: it is piped from
`az ad app credential reset` into `az keyvault secret set --file /dev/stdin`. The certificate's
private key never leaves Key Vault (except into the function's memory).
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
      -c | --credential) credential="${2:?$1 needs a value}"; credential_source='--credential'; shift 2 ;;
      --secret-years) secret_years="${2:?$1 needs a value}"; shift 2 ;;
      --rotate-secret) rotate_secret=true; shift ;;
      --rotate-certificate) rotate_certificate=true; shift ;;
      --skip-publish) skip_publish=true; shift ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  [[ -n "$resource_group" ]] || die "--resource-group is required (see --help)"
  [[ "$name_prefix" =~ ^[a-z0-9]{3,10}$ ]] || die "--prefix must be 3-10 lowercase letters or digits, got '$name_prefix'"
  [[ "$secret_years" =~ ^[1-9][0-9]?$ ]] || die "--secret-years must be a whole number of years, got '$secret_years'"
  if [[ -n "$credential" ]] && ! known_credential "$credential"; then
    die "--credential must be one of: $CREDENTIAL_KINDS (got '$credential')"
  fi
  check_rotation_flags
}

known_credential() { [[ "$1" =~ ^(secret|certificate|federated)$ ]]; }

# check_rotation_flags: --rotate-* must match the credential kind (once it is known).
check_rotation_flags() {
  if $rotate_secret && [[ -n "$credential" && "$credential" != secret ]]; then
    die "--rotate-secret applies to --credential secret, not $credential"
  fi
  if $rotate_certificate && [[ -n "$credential" && "$credential" != certificate ]]; then
    die "--rotate-certificate applies to --credential certificate${credential:+, not $credential}"
  fi
  if $rotate_secret && $rotate_certificate; then
    die "--rotate-secret and --rotate-certificate exclude each other"
  fi
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

# choose_credential: --credential, else the kind the last deployment to this group used (so that a plain
# re-run never turns a federated or certificate deployment back into one with a client secret), else secret.
choose_credential() {
  if [[ -z "$credential" ]]; then
    credential="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
      --query properties.outputs.clientCredential.value -o tsv 2>/dev/null | tr -d '\r' || true)"
    if [[ -n "$credential" ]]; then
      credential_source='the last deployment'
    else
      credential='secret'
      credential_source='default'
    fi
  fi
  known_credential "$credential" ||
    die "the last deployment used credential '$credential', which this script does not know: pass --credential"
  check_rotation_flags
  log "Credential: $credential ($credential_source)"
}

ensure_app_registration() {
  log "App registration '$app_name'"
  local ids count
  # --display-name matches names that start with it; the filter matches the name exactly.
  ids="$(az ad app list --filter "displayName eq '${app_name//\'/\'\'}'" --query '[].appId' -o tsv)"
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
  # The signed-in user (or service principal) gets Key Vault Secrets Officer to store the client secret
  # (or Certificates Officer to create the certificate; federated: no vault role at all).
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
  export GRAPH_EXPORT_CLIENT_CREDENTIAL="$credential"
  export GRAPH_EXPORT_NAME_PREFIX="$name_prefix"
  export GRAPH_EXPORT_ALERT_EMAIL="$alert_email"
  export GRAPH_EXPORT_DEPLOYER_ID="$deployer_id"
  export GRAPH_EXPORT_DEPLOYER_TYPE="$deployer_type"
  az deployment group create --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --parameters "$SCRIPT_DIR/main.bicepparam" -o none

  # -o tsv prints a list one item per line, an empty string as an empty line (keyVaultName is empty for
  # federated): mapfile keeps every line in its place, where `read` would skip the empty ones.
  local raw outputs=()
  raw="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --query '[properties.outputs.functionAppName.value, properties.outputs.keyVaultName.value, properties.outputs.clientSecretName.value, properties.outputs.clientCertificateName.value, properties.outputs.exportStorageAccountName.value, properties.outputs.exportContainerName.value, properties.outputs.identityName.value, properties.outputs.identityPrincipalId.value, properties.outputs.federatedCredentialIssuer.value, properties.outputs.federatedTokenAudience.value]' \
    -o tsv | tr -d '\r')"
  mapfile -t outputs <<<"$raw"
  function_app="${outputs[0]-}" key_vault="${outputs[1]-}" secret_name="${outputs[2]-}"
  certificate_name="${outputs[3]-}" export_account="${outputs[4]-}" export_container="${outputs[5]-}"
  identity_name="${outputs[6]-}" identity_principal_id="${outputs[7]-}"
  federated_issuer="${outputs[8]-}" federated_audience="${outputs[9]-}"
  [[ -n "$function_app" && -n "$identity_principal_id" ]] ||
    die "could not read the deployment outputs of $DEPLOYMENT_NAME in $resource_group"
  if [[ "$credential" != federated && -z "$key_vault" ]]; then
    die "the deployment $DEPLOYMENT_NAME in $resource_group has no Key Vault output for credential $credential"
  fi
  info "function app $function_app (identity $identity_name), exports in $export_account/$export_container"
  [[ -z "$key_vault" ]] || info "key vault $key_vault"
}

# wait_for_vault WHAT ROLE: the Officer role assigned by the deployment can take a few minutes to reach
# the vault's data plane; list WHAT (secret | certificate) until it answers.
wait_for_vault() {
  retry "waiting for access to the vault" az keyvault "$1" list --vault-name "$key_vault" -o none ||
    die "no access to the ${1}s of $key_vault: you need '$2' on it"
}

store_client_secret() {
  log "Client secret in Key Vault $key_vault (secret '$secret_name')"
  wait_for_vault secret 'Key Vault Secrets Officer'

  local existing
  existing="$(az keyvault secret list --vault-name "$key_vault" --query "[?name=='$secret_name'].id" -o tsv)"
  if [[ -n "$existing" ]] && ! $rotate_secret; then
    info "already set; keeping it (pass --rotate-secret for a new one)"
    return
  fi

  local expires
  expires="$(future_date "$secret_years")"
  # The password goes from Entra ID to Key Vault through a pipe: never a variable, file, argument or echo.
  # The credential's end date and the secret's expiry are the same instant: the app warns from Key Vault's
  # `expires` ("Credential expiry: ...") before Entra ID starts refusing the secret.
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

# ensure_certificate: the Key Vault certificate (created with infra/certificate-policy.json: self-signed,
# RSA 2048, exportable key, PKCS#12, renews itself at 80% of its 12-month lifetime) and its current
# version's public key registered on the app registration. Key Vault's renewal makes a new certificate
# (new key, new thumbprint) which Entra ID does not know: the app's sign-in fails (AADSTS700027) until it
# is registered, which every run of this script does. The private key never leaves the vault except into
# the function's memory: only the public part is read here, by `az ad app credential reset --keyvault`.
ensure_certificate() {
  log "Client certificate in Key Vault $key_vault (certificate '$certificate_name')"
  wait_for_vault certificate 'Key Vault Certificates Officer'

  local existing
  existing="$(az keyvault certificate list --vault-name "$key_vault" --query "[?name=='$certificate_name'].id" -o tsv)"
  if [[ -z "$existing" ]] || $rotate_certificate; then
    az keyvault certificate create --vault-name "$key_vault" --name "$certificate_name" \
      --policy "@$SCRIPT_DIR/certificate-policy.json" -o none
    info "new certificate version created (self-signed, RSA 2048; Key Vault renews it at 80% of its lifetime)"
  else
    info "exists; keeping it (pass --rotate-certificate for a new version now)"
  fi

  local raw current=()
  raw="$(az keyvault certificate show --vault-name "$key_vault" --name "$certificate_name" \
    --query '[x509ThumbprintHex, attributes.expires]' -o tsv | tr -d '\r')"
  mapfile -t current <<<"$raw"
  certificate_thumbprint="${current[0]-}"
  local expires="${current[1]-}"
  [[ -n "$certificate_thumbprint" && -n "$expires" ]] ||
    die "could not read the thumbprint and expiry of certificate $certificate_name in $key_vault"

  # The app registration's key credential is named after the thumbprint, so a version registered before
  # is recognised (Graph's own customKeyIdentifier encoding differs between tools).
  local label="graph-export $certificate_thumbprint" registered
  registered="$(az ad app credential list --id "$client_id" --cert \
    --query "[?displayName=='$label'].keyId" -o tsv)"
  if [[ -n "$registered" ]]; then
    info "public key already registered on the app (thumbprint $certificate_thumbprint, expires $expires)"
    return
  fi
  # --append keeps the earlier certificates (and any secret) valid until they expire; the key credential
  # ends when the certificate does.
  az ad app credential reset --id "$client_id" --append --cert "$certificate_name" --keyvault "$key_vault" \
    --display-name "$label" --end-date "$expires" -o none
  info "public key registered on the app (thumbprint $certificate_thumbprint, expires $expires)"
  info "earlier certificates stay registered until they expire: az ad app credential list --id $client_id --cert"
}

# ensure_federated_credential: the app registration trusts tokens the function's user-assigned identity
# gets for the token exchange audience. Issuer, subject and audience come from the deployment outputs
# (this cloud's sign-in host and the identity's tenant; the identity's object id; FEDERATED_TOKEN_AUDIENCE).
ensure_federated_credential() {
  local name="graph-export-$identity_name"
  log "Federated credential '$name' on the app registration (trusts identity $identity_name)"
  [[ -n "$federated_issuer" && -n "$federated_audience" ]] ||
    die "the deployment $DEPLOYMENT_NAME in $resource_group has no federated credential outputs"

  local raw current=()
  raw="$(az ad app federated-credential list --id "$client_id" \
    --query "[?name=='$name'] | [0].[issuer, subject, join(' ', audiences)]" -o tsv | tr -d '\r')"
  mapfile -t current <<<"$raw"
  local trust
  trust="$(printf '"issuer": "%s", "subject": "%s", "audiences": ["%s"]' \
    "$federated_issuer" "$identity_principal_id" "$federated_audience")"
  if [[ -z "${current[0]-}" ]]; then
    az ad app federated-credential create --id "$client_id" \
      --parameters "{\"name\": \"$name\", $trust, \"description\": \"Graph user export: function app $function_app\"}" -o none
    info "created: issuer $federated_issuer, subject $identity_principal_id, audience $federated_audience"
    info "Entra ID can take a few minutes to honour it: sign-ins fail with AADSTS70021 until then"
  elif [[ "${current[0]}" == "$federated_issuer" && "${current[1]-}" == "$identity_principal_id" &&
    "${current[2]-}" == "$federated_audience" ]]; then
    info "already trusts this identity"
  else
    az ad app federated-credential update --id "$client_id" --federated-credential-id "$name" \
      --parameters "{$trust}" -o none
    info "updated to issuer $federated_issuer, subject $identity_principal_id, audience $federated_audience"
  fi
}

# leftover_secrets_hint: with a certificate or federated credential, client secrets from an earlier
# deployment still work until they expire; say how to remove them.
leftover_secrets_hint() {
  local count
  count="$(az ad app credential list --id "$client_id" --query 'length(@)' -o tsv | tr -d '\r')"
  if [[ "$count" =~ ^[1-9] ]]; then
    warn "the app registration still has $count client secret(s). Once exports succeed with the $credential"
    warn "credential, delete them: az ad app credential list --id $client_id  /  az ad app credential delete --id $client_id --key-id <keyId>"
  fi
}

configure_credential() {
  case "$credential" in
    secret) store_client_secret ;;
    certificate) ensure_certificate; leftover_secrets_hint ;;
    federated) ensure_federated_credential; leftover_secrets_hint ;;
  esac
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
  info "identity:       $identity_name (user-assigned, object id $identity_principal_id)"
  case "$credential" in
    secret) info "credential:     client secret '$secret_name' in key vault $key_vault" ;;
    certificate) info "credential:     certificate '$certificate_name' in key vault $key_vault (thumbprint $certificate_thumbprint)"
      info "                after Key Vault renews it, run this script again to register the new one" ;;
    federated) info "credential:     federated (trusts identity $identity_name; no secret, no key vault)" ;;
  esac
  info "exports:        container '$export_container' in storage account $export_account"
  if $pending_consent; then
    warn "admin consent is still missing: az ad app permission admin-consent --id $client_id"
  fi
}

main() {
  parse_args "$@"
  preflight
  ensure_resource_group
  choose_credential
  ensure_app_registration
  deploy_bicep
  configure_credential
  if $skip_publish; then
    log "Skipping code publishing (--skip-publish)"
  else
    publish
  fi
  summary
}

main "$@"
