#!/usr/bin/env bash
# Deploy the Graph user export to Azure with the az CLI: resource group, app registration with
# Microsoft Graph User.Read.All (application) and admin consent (and AuditLog.Read.All when USER_PROPERTIES
# selects signInActivity; multi-tenant with --tenant-ids, printing each other tenant's admin-consent URL and a
# second path that needs no reply URL), the Bicep in infra/, the app's
# credential (--credential: a client secret piped straight into Key Vault, a self-renewing Key Vault
# certificate registered on the app, or a federated credential trusting the function's user-assigned
# identity), and the function code. Safe to run again: every step first looks at what exists and
# changes nothing that is already in place.
#
# Also: --what-if (preview, changes nothing), --destroy (teardown), --package FILE (the code package only),
# --reader PRINCIPAL and --run-now (use a deployment: read access to the exports, one export now).
# The same steps, one command at a time, are in infra/README.md.

set -Eeuo pipefail

readonly GRAPH_API_ID='00000003-0000-0000-c000-000000000000'       # Microsoft Graph
readonly USER_READ_ALL_ROLE='df021288-bdef-4463-88db-98f22de89214' # User.Read.All (application)
# AuditLog.Read.All (application), which Graph requires for signInActivity (Microsoft Graph permissions reference).
readonly AUDIT_LOG_READ_ALL_ROLE='b0afded3-3588-46d8-8b3d-9842eff778da'
readonly SECRETS_OFFICER='b86a8fe4-44ce-4948-aee5-eccb2c155cd7'     # Key Vault Secrets Officer
readonly CERTIFICATES_OFFICER='a4417e6f-fecd-4de8-b567-7b0420556985' # Key Vault Certificates Officer
readonly BLOB_DATA_READER='2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'     # Storage Blob Data Reader
readonly KEYVAULT_API='2023-07-01'  # Microsoft.KeyVault API version, as infra/modules/keyvault.bicep
readonly WEB_API='2022-03-01'       # Microsoft.Web API version of the host status call (the portal's)
readonly FUNCTION_NAME='export_users' # the timer function in function_app.py
readonly PLACEHOLDER_CLIENT_ID='00000000-0000-0000-0000-000000000000'
readonly DEPLOYMENT_NAME='graph-export'
readonly CREDENTIAL_KINDS='secret certificate federated'
readonly MULTI_TENANT='AzureADMultipleOrgs' # signInAudience of a registration other tenants can consent to
readonly GUID_FORM='[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
readonly SCRIPT_DIR REPO_ROOT

RETRY_DELAY="${DEPLOY_RETRY_DELAY:-10}" # seconds between retries while Entra ID / RBAC changes propagate
RETRY_COUNT="${DEPLOY_RETRY_COUNT:-30}"

mode=deploy             # deploy | what-if | destroy | package | use (--reader, --run-now)
resource_group=''
location=''
app_name='graph-user-export'
name_prefix='graphexp'
alert_email=''
credential=''           # secret | certificate | federated; empty = the last deployment's, else secret
credential_source=''
vnet=''                 # true | false; empty = the last deployment's, else false
vnet_source=''
immutability_days=''    # days of the export container's WORM policy, 0 = off; empty = the last deployment's, else 0
immutability_source=''
immutability_locked=false  # the policy is locked: the deployment leaves it alone
immutability_extend=false  # ... at fewer days than asked: extend it after the deployment
policy_days='' policy_etag=''
tenant_ids=''           # TENANT_IDS, comma-separated tenant ids; empty = one tenant (see tenant_ids_given)
tenant_ids_given=false  # --tenant-ids / --no-tenant-ids given; else the last deployment's, else none
tenant_ids_source=''
# The export settings people change, app settings that main.bicep writes from its parameters: flag, else the last
# deployment's value, else main.bicepparam's (choose_export_settings). A row: shell variable, flag, main.bicep
# parameter, the GRAPH_EXPORT_* variable main.bicepparam reads it from.
readonly EXPORT_SETTINGS=(
  'schedule --schedule exportSchedule GRAPH_EXPORT_SCHEDULE'
  'export_mode --export-mode exportMode GRAPH_EXPORT_MODE'
  'formats --formats exportFormats GRAPH_EXPORT_FORMATS'
  'csv_excel --csv-excel/--no-csv-excel csvExcel GRAPH_EXPORT_CSV_EXCEL'
  'full_sync_days --full-sync-every-days fullSyncEveryDays GRAPH_EXPORT_FULL_SYNC_EVERY_DAYS'
  'user_properties --user-properties userProperties GRAPH_EXPORT_USER_PROPERTIES'
)
schedule='' export_mode='' formats='' csv_excel='' full_sync_days='' user_properties=''
# shellcheck disable=SC2034 # where each came from, read by name (choose_export_settings, setting_origin)
schedule_source='' export_mode_source='' formats_source='' csv_excel_source='' full_sync_days_source='' user_properties_source=''
secret_years=1
rotate_secret=false
keep_previous_secret=false
readers=()              # --reader: principals given Storage Blob Data Reader on the exports
run_now=false
rotate_certificate=false
skip_publish=false
publish_timeout=600
delete_app=false
assume_yes=false
package_path=''

pending_consent=false
consent_commands=()     # what an administrator must run when this script could not grant consent
graph_roles=()          # the Microsoft Graph application roles the app needs (choose_graph_roles)
workdir=''
temporary_role_id=''    # the deployer's Key Vault role while this run creates or replaces the secret or certificate
new_secret_ids=''       # key ids of the client secret this run created

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh --resource-group NAME [options]
       infra/deploy.sh --resource-group NAME --what-if [options]
       infra/deploy.sh --resource-group NAME --destroy [--delete-app-registration] [--yes]
       infra/deploy.sh --package FILE
       infra/deploy.sh --resource-group NAME [--reader PRINCIPAL]... [--run-now]

Deploys the Graph user export into one resource group and publishes the function code.
Idempotent: run it again to apply changes; it reuses what already exists.

Required:
  -g, --resource-group NAME   Resource group to deploy into (created if missing).

Options:
  -l, --location REGION       Region for a new resource group; it must offer Flex Consumption (checked
                              against az functionapp list-flexconsumption-locations before anything is
                              created). Default: the existing group's region.
  -n, --app-name NAME         Display name of the Entra ID app registration
                              (default: graph-user-export). Reused if one has exactly this name.
  -p, --prefix PREFIX         Resource name prefix, 3-10 lowercase letters/digits (default: graphexp).
  -e, --alert-email ADDRESS   E-mail notified when an export fails, none succeeded in 26 hours,
                              the client secret or certificate expires within 30 days, or access
                              (role assignments, the Key Vault) changes.
  -c, --credential KIND       How the app signs in to Entra ID (see "Choosing a credential" in README.md):
                                secret       a client secret in Key Vault (expires after --secret-years)
                                certificate  a self-signed Key Vault certificate that renews itself,
                                             its public key registered on the app registration
                                federated    a federated credential trusting the function's user-assigned
                                             managed identity: no secret anywhere, no Key Vault
                              Default: what the last deployment to the group used, else secret.
      --vnet                  Private networking: VNet integration for the app, private endpoints for
                              both storage accounts and the vault, their public network access disabled.
                              With secret or certificate, run this script from inside that VNet (the
                              vault then answers only there), or use --credential federated.
      --no-vnet               Public endpoints (Entra ID + RBAC being the gate).
                              Default: what the last deployment to the group used, else --no-vnet.
      --immutability-days N   Immutable (WORM) exports: a time-based retention policy on the export
                              container keeps every export and manifest from being overwritten or deleted
                              for N days (at most exportRetentionDays in infra/main.bicepparam); the app's
                              state (users/latest.json, ...) moves to the container <export container>-state.
                              0 turns it off, which a policy allows only while unlocked, once deleted; a
                              locked policy can only grow. Default: what the last deployment to the group
                              used, else 0. See "Immutable exports (WORM)" in infra/README.md.
      --tenant-ids LIST       TENANT_IDS: export these tenants (comma-separated directory (tenant) ids) from
                              this one deployment: at each slot the timer queues one message per tenant and
                              the queue trigger exports each. The app registration becomes multi-tenant
                              (signInAudience AzureADMultipleOrgs); after the deployment this script prints,
                              for each tenant other than this one, the admin-consent URL an administrator of
                              that tenant opens once, and a second path that needs no reply URL (az ad sp
                              create there, then the grant). This tenant gets its consent as without the flag.
      --no-tenant-ids         One tenant again, this one (TENANT_ID). The registration stays multi-tenant.
                              Default: what the last deployment to the group used, else one tenant.
      --schedule NCRONTAB     EXPORT_SCHEDULE, when the export runs: 6 fields, second minute hour day month
                              day-of-week, UTC (default: '0 0 2 * * *', daily at 02:00).
      --export-mode MODE      EXPORT_MODE: full (default) or delta.
      --formats LIST          EXPORT_FORMATS: jsonl (default), or jsonl,csv for a CSV copy too.
      --csv-excel, --no-csv-excel  CSV_EXCEL: the CSV copy starts with a byte order mark, for Excel (default: no).
      --full-sync-every-days N  FULL_SYNC_EVERY_DAYS: delta mode's full export, every 0-7 days (default: 6).
      --user-properties LIST  USER_PROPERTIES: comma-separated Graph user properties (default: the app's list);
                              with signInActivity the app also gets AuditLog.Read.All (see Needs).
                              These six default to what the last deployment to the group used, else to
                              infra/main.bicepparam. The deployment writes every app setting, so change them
                              here: one set by hand in the portal is gone after the next run.
      --secret-years N        Lifetime of a new client secret in years (default: 1).
      --rotate-secret         Create a new client secret even if Key Vault already holds a valid one; once
                              a sign-in with it works, delete the earlier ones this deployment made.
      --keep-previous-secret  With a new client secret: keep the earlier ones valid until they expire.
      --rotate-certificate    Create a new version of the certificate now and register it.
      --skip-publish          Provision and configure only; do not upload the code.
      --publish-timeout SEC   How long to wait for the remote build and deployment (default: 600);
                              then the host's health is checked for about 7 more minutes.
      --what-if               Preview: the region check, what exists, and `az deployment group what-if`;
                              creates and changes nothing.
      --destroy               Delete the resource group and the credentials this script put on the app
                              registration (the client secrets named after the vault, the certificates'
                              public keys, the federated credential). Asks first unless --yes.
      --delete-app-registration  With --destroy: delete the app registration too.
      --yes                   With --destroy: do not ask for confirmation.
      --package FILE          Write the code package (what .funcignore lets through) to FILE and stop.
      --reader PRINCIPAL      Give a user (UPN or object id), a service principal (app id or object id) or a
                              group (object id) Storage Blob Data Reader on the export container(s) of the
                              existing deployment; repeatable. Deploys nothing else.
      --run-now               Start one export in Azure now (the existing deployment; deploys nothing) and say
                              where its log and its result appear.
  -h, --help                  Show this help.

Needs: the az CLI, signed in as a user (az login), a service principal (az login --service-principal)
or a managed identity (az login --identity); git and zip (or python3) to package the code.
  Azure:    Owner, or Contributor + User Access Administrator (or Role Based Access Control Administrator),
            on the resource group (on the subscription to create it; --vnet also registers the
            Microsoft.App resource provider once, which needs Contributor on the subscription).
  Entra ID: to create the app registration and its credentials: a user needs Application Administrator,
            Cloud Application Administrator or Application Developer (or ownership of an existing
            registration); a service principal or managed identity needs the Microsoft Graph application
            permission Application.ReadWrite.OwnedBy (as the registration's owner) or Application.ReadWrite.All.
            To grant User.Read.All (admin consent): a user needs Privileged Role Administrator or Global
            Administrator; a service principal or managed identity needs AppRoleAssignment.ReadWrite.All.
            Without it the script finishes and prints the one command an administrator must run.
            --user-properties with signInActivity (or a last deployment that had it): the app
            also gets AuditLog.Read.All, the same way; Graph serves signInActivity only to tenants with an
            Entra ID P1 or P2 licence.

The client secret never touches the disk or the terminal: it is piped from
`az ad app credential reset` into `az keyvault secret set --file /dev/stdin` (and refused when empty).
The certificate's private key never leaves Key Vault (except into the function's memory). You get Key
Vault Secrets Officer only for a run that creates or replaces the secret, and no access to it afterwards;
with a certificate you keep Key Vault Certificates Officer on that one certificate (it cannot read the key).
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# on_error: any command that fails unexpectedly (set -e) says which one, so that the script never stops
# without a message. Commands in subshells leave it to the script itself.
on_error() {
  local rc="$1" line="$2" command="$3"
  ((BASH_SUBSHELL == 0)) || return 0
  printf 'ERROR: stopped at infra/deploy.sh line %s (exit %s) in: %s\n' "$line" "$rc" "$command" >&2
  printf '       The az message above says why; "Needs" in infra/deploy.sh --help lists the roles and\n' >&2
  printf '       permissions each step requires.\n' >&2
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

# on_exit: a temporary vault-wide role never outlives the script, and the work directory goes.
on_exit() {
  if [[ -n "$temporary_role_id" ]]; then
    if az role assignment delete --ids "$temporary_role_id" -o none 2>/dev/null; then
      info "removed your temporary role on the vault"
    else
      warn "could not remove your temporary role on the vault: az role assignment delete --ids $temporary_role_id"
    fi
  fi
  [[ -z "$workdir" ]] || rm -rf "$workdir"
}
trap on_exit EXIT

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
      --vnet) vnet=true; vnet_source='--vnet'; shift ;;
      --no-vnet) vnet=false; vnet_source='--no-vnet'; shift ;;
      --immutability-days) immutability_days="${2:?$1 needs a value}"; immutability_source="$1"; shift 2 ;;
      --tenant-ids) tenant_ids="${2:?$1 needs a value}"; tenant_ids_given=true; tenant_ids_source="$1"; shift 2 ;;
      --no-tenant-ids) tenant_ids=''; tenant_ids_given=true; tenant_ids_source="$1"; shift ;;
      --schedule) schedule="${2:?$1 needs a value}"; shift 2 ;;
      --export-mode) export_mode="${2:?$1 needs a value}"; shift 2 ;;
      --formats) formats="${2:?$1 needs a value}"; shift 2 ;;
      --csv-excel) csv_excel=true; shift ;;
      --no-csv-excel) csv_excel=false; shift ;;
      --full-sync-every-days) full_sync_days="${2:?$1 needs a value}"; shift 2 ;;
      --user-properties) user_properties="${2:?$1 needs a value}"; shift 2 ;;
      --secret-years) secret_years="${2:?$1 needs a value}"; shift 2 ;;
      --rotate-secret) rotate_secret=true; shift ;;
      --keep-previous-secret) keep_previous_secret=true; shift ;;
      --reader) readers+=("${2:?$1 needs a value}"); shift 2 ;;
      --run-now) run_now=true; shift ;;
      --rotate-certificate) rotate_certificate=true; shift ;;
      --skip-publish) skip_publish=true; shift ;;
      --publish-timeout) publish_timeout="${2:?$1 needs a value}"; shift 2 ;;
      --what-if) set_mode what-if "$1"; shift ;;
      --destroy) set_mode destroy "$1"; shift ;;
      --delete-app-registration) delete_app=true; shift ;;
      --yes) assume_yes=true; shift ;;
      --package) set_mode package "$1"; package_path="${2:?$1 needs a value}"; shift 2 ;;
      -h | --help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument: $1" ;;
    esac
  done
  if ((${#readers[@]})) || $run_now; then
    set_mode use '--reader and --run-now'
  fi
  if [[ "$mode" == package ]]; then
    return
  fi
  [[ -n "$resource_group" ]] || die "--resource-group is required (see --help)"
  [[ "$name_prefix" =~ ^[a-z0-9]{3,10}$ ]] || die "--prefix must be 3-10 lowercase letters or digits, got '$name_prefix'"
  [[ "$secret_years" =~ ^[1-9][0-9]?$ ]] || die "--secret-years must be a whole number of years, got '$secret_years'"
  if ! [[ "$publish_timeout" =~ ^[1-9][0-9]{1,4}$ ]] || ((publish_timeout < 60)); then
    die "--publish-timeout must be a number of seconds, at least 60, got '$publish_timeout'"
  fi
  if [[ -n "$immutability_days" ]] &&
    { ! [[ "$immutability_days" =~ ^(0|[1-9][0-9]{0,3})$ ]] || ((immutability_days > 3650)); }; then
    die "--immutability-days must be a whole number of days from 0 (off) to 3650, got '$immutability_days'"
  fi
  if [[ -n "$credential" ]] && ! known_credential "$credential"; then
    die "--credential must be one of: $CREDENTIAL_KINDS (got '$credential')"
  fi
  if [[ "$mode" != destroy ]] && { $delete_app || $assume_yes; }; then
    die "--delete-app-registration and --yes apply to --destroy only"
  fi
  # Azure names regions in lower case without spaces ("West Europe" is westeurope).
  location="$(printf '%s' "${location// /}" | tr '[:upper:]' '[:lower:]')"
  check_rotation_flags
  check_export_settings
  check_tenant_ids
}

set_mode() {
  [[ "$mode" == deploy ]] || die "$2 cannot be combined with --$mode"
  mode="$1"
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
  if $keep_previous_secret && [[ -n "$credential" && "$credential" != secret ]]; then
    die "--keep-previous-secret applies to --credential secret, not $credential"
  fi
  if $rotate_secret && $rotate_certificate; then
    die "--rotate-secret and --rotate-certificate exclude each other"
  fi
}

# --- sign-in -------------------------------------------------------------------------------------------

preflight() {
  log "Checking tools and sign-in"
  command -v az >/dev/null || die "the az CLI is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
  if [[ "$mode" == deploy ]] && ! $skip_publish; then
    command -v git >/dev/null || die "git is needed to package the code (or pass --skip-publish)"
    command -v zip >/dev/null || command -v python3 >/dev/null || die "zip or python3 is needed to package the code"
  fi
  local raw account=()
  raw="$(az account show --query '[tenantId, id, user.name, user.type]' -o tsv 2>/dev/null | tr -d '\r')" ||
    die "not signed in: run 'az login' (a user), 'az login --service-principal ...' or 'az login --identity' (a managed identity), then 'az account set -s <subscription>'"
  mapfile -t account <<<"$raw"
  tenant_id="${account[0]-}" subscription_id="${account[1]-}"
  local user_name="${account[2]-}" user_type="${account[3]-}"
  if [[ "$user_type" == user ]]; then
    deployer_kind='user' deployer_type='User' deployer_label="user $user_name"
  elif [[ "$user_name" == systemAssignedIdentity || "$user_name" == userAssignedIdentity ]]; then
    deployer_kind='managed identity' deployer_type='ServicePrincipal' deployer_label="managed identity ($user_name)"
  else
    deployer_kind='service principal' deployer_type='ServicePrincipal' deployer_label="service principal $user_name"
  fi

  # This cloud's Microsoft Graph: the consent request goes there, and the app reads users from it. Its sign-in
  # host: a new client secret is tried there.
  raw="$(az cloud show --query '[name, endpoints.microsoftGraphResourceId, endpoints.activeDirectory]' -o tsv |
    tr -d '\r')"
  local cloud=()
  mapfile -t cloud <<<"$raw"
  cloud_name="${cloud[0]-}" graph_url="${cloud[1]-}" login_url="${cloud[2]-}"
  graph_url="${graph_url%/}" login_url="${login_url%/}"
  [[ "$graph_url" == https://* ]] || die "az cloud show names no Microsoft Graph endpoint for cloud '$cloud_name'"

  deployer_identity
  info "tenant $tenant_id, subscription $subscription_id, cloud $cloud_name (Graph $graph_url)"
  info "signed in as $deployer_label, object id $deployer_id"
}

# deployer_identity: the object id of whoever runs this (it gets Key Vault roles on the secret or
# certificate). A user's comes from Graph; a service principal's or managed identity's from the `oid` claim
# of its own access token (`az login --identity` names no object id: the account is "systemAssignedIdentity").
deployer_identity() {
  if [[ "$deployer_kind" == user ]]; then
    deployer_id="$(az ad signed-in-user show --query id -o tsv | tr -d '\r')" ||
      die "could not read your user object from Microsoft Graph (az ad signed-in-user show)"
  else
    deployer_id="$(token_object_id)"
  fi
  [[ "$deployer_id" =~ ^[0-9a-fA-F-]{36}$ ]] || die "could not determine the object id of the signed-in $deployer_kind"
}

token_object_id() {
  local payload
  # The token's middle part (its claims, base64url) only: the signature never leaves the pipe.
  payload="$(az account get-access-token --query accessToken -o tsv | cut -d. -f2 | tr '_-' '/+')"
  while ((${#payload} % 4)); do payload+='='; done
  printf '%s' "$payload" | base64 -d 2>/dev/null | tr ',{}' '[\n*]' |
    sed -n 's/^ *"oid" *: *"\([0-9a-fA-F-]*\)" *$/\1/p' | head -n 1
}

# --- region, resource group, previous deployment --------------------------------------------------------

# check_region: before anything is created, the group's region (or --location for a new group) must
# offer Flex Consumption to this subscription.
check_region() {
  log "Region"
  existing_location="$(az group show --name "$resource_group" --query location -o tsv 2>/dev/null | tr -d '\r' || true)"
  local region="${existing_location:-$location}"
  if [[ -z "$region" ]]; then
    die "resource group $resource_group does not exist: pass --location to create it"
  fi
  if [[ -n "$existing_location" && -n "$location" && "$location" != "$existing_location" ]]; then
    warn "--location $location ignored: the group already exists in $existing_location"
  fi
  local offered
  offered="$(az functionapp list-flexconsumption-locations --query '[].name' -o tsv | tr -d '\r')"
  if ! grep -qx "$region" <<<"$offered"; then
    die "region '$region' does not offer the Flex Consumption plan to this subscription. Regions that do: $(tr '\n' ' ' <<<"$offered")(az functionapp list-flexconsumption-locations -o table)"
  fi
  info "$region offers Flex Consumption"
}

ensure_resource_group() {
  log "Resource group $resource_group"
  if [[ -n "$existing_location" ]]; then
    info "exists in $existing_location"
  else
    az group create --name "$resource_group" --location "$location" -o none
    info "created in $location"
  fi
}

# previous_deployment: what the last deployment to this group used (credential kind, private networking,
# immutable exports, and where the exports are), so that a plain re-run keeps it. An older deployment without
# an output prints "None" for it.
previous_deployment() {
  previous_credential='' previous_vnet='' previous_immutability='' previous_account='' previous_container=''
  previous_tenants=''
  [[ -n "$existing_location" ]] || return 0
  local raw previous=()
  raw="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --query '[properties.outputs.clientCredential.value, properties.outputs.vnetEnabled.value, properties.outputs.exportImmutabilityDays.value, properties.outputs.exportStorageAccountName.value, properties.outputs.exportContainerName.value, properties.outputs.tenantIds.value]' \
    -o tsv 2>/dev/null | tr -d '\r' || true)"
  mapfile -t previous <<<"$raw"
  previous_credential="${previous[0]-}" previous_vnet="${previous[1]-}" previous_immutability="${previous[2]-}"
  previous_account="${previous[3]-}" previous_container="${previous[4]-}" previous_tenants="${previous[5]-}"
  [[ "$previous_tenants" != None ]] || previous_tenants=''
  [[ "$previous_credential" != None ]] || previous_credential=''
  [[ "$previous_vnet" =~ ^(true|false)$ ]] || previous_vnet=''
  [[ "$previous_immutability" =~ ^[0-9]+$ ]] || previous_immutability=''
  [[ "$previous_account" != None ]] || previous_account=''
  [[ "$previous_container" != None ]] || previous_container=''
}

# choose_credential: --credential, else the kind the last deployment to this group used (so that a plain
# re-run never turns a federated or certificate deployment back into one with a client secret), else secret.
# choose_network likewise for --vnet / --no-vnet.
choose_credential() {
  if [[ -z "$credential" ]]; then
    credential="$previous_credential"
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

choose_network() {
  if [[ -z "$vnet" ]]; then
    vnet="${previous_vnet:-false}"
    vnet_source="$([[ -n "$previous_vnet" ]] && echo 'the last deployment' || echo 'default')"
  fi
  if $vnet; then
    log "Network: private endpoints, public network access disabled ($vnet_source)"
    [[ "$credential" == federated ]] ||
      info "the vault will answer only inside the VNet: run this script from there (or use --credential federated)"
  else
    log "Network: public endpoints, Entra ID + RBAC ($vnet_source)"
  fi
}

# --- many tenants ------------------------------------------------------------------------------------------

# check_tenant_ids: TENANT_IDS as the app takes it (graph_export/settings.py): directory (tenant) ids, which are GUIDs
# (a domain name is not one: the app signs in to each tenant's authority by id). Normalised to lower case, without
# blanks, each once, in the order given. Refused in one line before anything is created.
check_tenant_ids() {
  [[ -n "$tenant_ids" ]] || return 0
  local items=() item seen=',' normal=''
  IFS=',' read -r -a items <<<"$tenant_ids"
  for item in "${items[@]}"; do
    item="$(tr -d ' \t' <<<"$item" | tr '[:upper:]' '[:lower:]')"
    [[ -n "$item" ]] || continue
    [[ "$item" =~ ^$GUID_FORM$ ]] ||
      die "--tenant-ids takes comma-separated directory (tenant) ids, GUIDs such as 11111111-2222-3333-4444-555555555555; '$item' is not one$(tenant_ids_origin) (a tenant's id: az account show --query tenantId there, or the GUID in the issuer of https://login.microsoftonline.com/<domain>/v2.0/.well-known/openid-configuration)"
    [[ "$seen" == *",$item,"* ]] && continue
    seen+="$item," normal+="${normal:+,}$item"
  done
  [[ -n "$normal" ]] || die "--tenant-ids names no tenant id (got '$tenant_ids'): pass at least one, or --no-tenant-ids for one tenant"
  tenant_ids="$normal"
}

tenant_ids_origin() {
  [[ "$tenant_ids_source" == 'the last deployment' ]] && printf ' (from the last deployment)'
  return 0
}

# choose_tenants: --tenant-ids / --no-tenant-ids, else what the last deployment used (a plain re-run keeps every
# tenant: the deployment writes the app settings as a whole), else one tenant.
choose_tenants() {
  if ! $tenant_ids_given; then
    tenant_ids="$previous_tenants"
    tenant_ids_source="$([[ -n "$previous_tenants" ]] && echo 'the last deployment' || echo 'default')"
    check_tenant_ids
  fi
  if [[ -z "$tenant_ids" ]]; then
    log "Tenants: one, this one ($tenant_id) ($tenant_ids_source)"
    return
  fi
  local count
  count="$(tr ',' '\n' <<<"$tenant_ids" | grep -c .)"
  log "Tenants: $count from one deployment, each through the queue ($tenant_ids_source); the app registration is multi-tenant"
}

# exports_tenant ID: whether this deployment exports tenant ID (TENANT_IDS, or with none this tenant only).
exports_tenant() {
  [[ -z "$tenant_ids" && "$1" == "$tenant_id" ]] || [[ ",$tenant_ids," == *",${1,,},"* ]]
}

# consent_url TENANT: the URL an administrator of TENANT opens to grant the app's application permissions there
# (tenant-wide admin consent: learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent, "Construct the
# URL for granting tenant-wide admin consent": <sign-in host>/{tenant}/adminconsent?client_id={client id}), on this
# cloud's sign-in host (az cloud show: login.microsoftonline.us, login.chinacloudapi.cn, ...).
consent_url() { printf '%s/%s/adminconsent?client_id=%s' "$login_url" "$1" "$client_id"; }

# ensure_audience: a registration other tenants can consent to is AzureADMultipleOrgs (one with personal accounts
# too, AzureADandPersonalMicrosoftAccount, already is). Without --tenant-ids an existing audience is left as it is:
# making a multi-tenant registration single-tenant again would cut off every tenant that consented.
ensure_audience() {
  local audience
  audience="$(az ad app show --id "$client_id" --query signInAudience -o tsv | tr -d '\r')" ||
    die "could not read the sign-in audience of app registration $client_id"
  if [[ -z "$tenant_ids" ]]; then
    [[ "$audience" == AzureADMyOrg ]] ||
      info "sign-in audience $audience: left as it is (single-tenant again: az ad app update --id $client_id --sign-in-audience AzureADMyOrg, which stops every other tenant's sign-ins)"
    return
  fi
  if [[ "$audience" == AzureADMyOrg ]]; then
    az ad app update --id "$client_id" --sign-in-audience "$MULTI_TENANT" -o none ||
      die "could not make app registration $client_id multi-tenant (signInAudience $MULTI_TENANT): $(app_permission_help)"
    info "made multi-tenant (signInAudience $MULTI_TENANT): other tenants can consent to it"
  else
    info "multi-tenant (signInAudience $audience)"
  fi
}

# tenants_summary: each tenant this deployment exports and how its consent stands. This tenant's was granted above
# (or printed as pending); every other one needs its administrator to open the admin-consent URL once, or, as the
# registration has no reply URL and Entra may end that page with AADSTS500113, to take the second path
# (consent_second_path), which needs none.
tenants_summary() {
  [[ -n "$tenant_ids" ]] || return 0
  local tenant others=0
  info "tenants:        $(tr ',' ' ' <<<"$tenant_ids")"
  [[ -z "$export_queue" ]] ||
    info "                one message per tenant and slot on queue $export_queue in $export_account; failed ones end on $poison_queue"
  info "                each tenant's administrator (Privileged Role Administrator or Global Administrator there)"
  info "                opens its admin-consent URL once; until then that tenant's exports fail, the others run:"
  for tenant in ${tenant_ids//,/ }; do
    if [[ "$tenant" == "${tenant_id,,}" ]]; then
      info "  $tenant (this tenant): $($pending_consent && echo 'consent still missing, see below' || echo 'consent granted by this script')"
    else
      info "  $tenant: $(consent_url "$tenant")"
      info "    or, in that tenant: $(tenant_login "$tenant") && az ad sp create --id $client_id"
      others=$((others + 1))
    fi
  done
  ((others == 0)) || consent_second_path
}

# tenant_login TENANT: an administrator's sign-in to TENANT on this cloud (a sovereign one first needs its az cloud).
tenant_login() {
  [[ "$cloud_name" == AzureCloud ]] || printf 'az cloud set --name %s && ' "$cloud_name"
  printf 'az login --tenant %s' "$1"
}

# consent_second_path: printed once after the other tenants' lines. The admin-consent page redirects to a reply URL
# when it is done; this registration has none, so the page may end with AADSTS500113 ("No reply address is
# registered for the application"), and whether Entra recorded the consent first cannot be checked here. The second
# path needs no reply URL: `az ad sp create --id <client id>` makes the app's service principal in that tenant
# (azure-cli's _create_service_principal looks the app up in the signed-in tenant and, not finding it there, posts
# {"appId": <id>} "maybe from an external tenant"; `az ad sp create --help`: "--id [Required] : Identifier uri,
# application id, or object id of the associated application"), then each Microsoft Graph permission is granted
# on it, as grant_consent does here: an app role assignment through Graph (learn.microsoft.com/entra/identity/
# enterprise-apps/grant-admin-consent, "Grant admin consent for application permissions using Microsoft Graph
# API"; Privileged Role Administrator). Its "Grant tenant-wide admin consent in Enterprise apps pane" is printed
# too, as the way without a shell, but of that button the page says "a window opens from the Microsoft Entra admin
# center to prompt for tenant-wide admin consent" and that the URL above is "the same URL" (an earlier version
# listed adding the redirect URI https://entra.microsoft.com/TokenAuthorize to the app as a step of that pane:
# MicrosoftDocs/azure-docs#107535), so az is the path that involves no redirect at all. `az ad app permission
# admin-consent` is none: it reads the application object, which exists only in this tenant. The check: the
# assignments themselves, then that tenant's next export (no more AADSTS7000229, Entra's answer to an app without
# a service principal there, and no 403 from Graph).
consent_second_path() {
  local role names='' ids=''
  for role in "${graph_roles[@]}"; do
    names+="${names:+ and }$(role_name "$role")" ids+="${ids:+ and }$role"
  done
  info "                if a page ends with AADSTS500113 (no reply address), the consent may still have been recorded:"
  info "                check it (below), else take the second path, which needs no reply URL. After az ad sp create"
  info "                (the app's service principal there), grant Microsoft Graph $names there with az:"
  info "                  sp=\$(az ad sp show --id $client_id --query id -o tsv)"
  info "                  graph=\$(az ad sp show --id $GRAPH_API_ID --query id -o tsv)"
  for role in "${graph_roles[@]}"; do
    info "                  az rest --method POST --uri \"$graph_url/v1.0/servicePrincipals/\$graph/appRoleAssignedTo\" --body \"{\\\"principalId\\\": \\\"\$sp\\\", \\\"resourceId\\\": \\\"\$graph\\\", \\\"appRoleId\\\": \\\"$role\\\"}\""
  done
  info "                or in the Entra admin center: Enterprise applications > $app_name > Permissions > \"Grant admin"
  info "                consent for <tenant name>\" (learn.microsoft.com/entra/identity/enterprise-apps/grant-admin-consent;"
  info "                it opens the same consent window as the URL, so it may end the same way)."
  info "                check, in that tenant: Enterprise applications > $app_name > Permissions shows Microsoft Graph"
  info "                $names granted for the tenant, or this lists $ids (\$sp as above):"
  info "                  az rest --method GET --uri \"$graph_url/v1.0/servicePrincipals/\$sp/appRoleAssignments\" --query \"value[].appRoleId\" -o tsv"
  info "                and after its next export python -m graph_export status shows the tenant published, no longer"
  info "                failing with AADSTS7000229 (no service principal there) or a 403 from Microsoft Graph (no consent)."
}

# choose_immutability: --immutability-days, else what the last deployment used (a plain re-run must not move the
# app's state back into a container whose policy refuses overwrites), else 0; then check_retention and
# check_policy.
choose_immutability() {
  if [[ -z "$immutability_days" ]]; then
    immutability_days="${previous_immutability:-0}"
    immutability_source="$([[ -n "$previous_immutability" ]] && echo 'the last deployment' || echo 'default')"
  fi
  check_retention
  check_policy
  if ((immutability_days > 0)); then
    log "Immutable exports: a ${immutability_days}-day retention policy on the export container, the app's state in a container of its own ($immutability_source)"
  else
    log "Immutable exports: off ($immutability_source)"
  fi
}

# check_retention: the lifecycle rule deletes an export exportRetentionDays after it was written, and cannot while
# the policy still protects it: a longer policy would keep every export past its retention. Read from
# main.bicepparam when it sets a plain number there.
check_retention() {
  ((immutability_days > 0)) || return 0
  local retention
  retention="$(sed -n 's/^param exportRetentionDays = \([0-9][0-9]*\)[[:space:]]*$/\1/p' "$SCRIPT_DIR/main.bicepparam" |
    head -n 1)"
  if [[ -n "$retention" ]] && ((immutability_days > retention)); then
    die "--immutability-days $immutability_days exceeds exportRetentionDays $retention (infra/main.bicepparam): the lifecycle rule could not delete an export the policy still protects. Raise exportRetentionDays to at least $immutability_days, or pass --immutability-days $retention or less."
  fi
}

# check_policy: the export container's policy as it stands (az prints nothing when there is none). Locked:
# ARM accepts no write to it but an extension, so the deployment leaves it alone (exportImmutabilityLocked) and
# it can only grow (extend_policy). Unlocked: a deployment changes its days but never removes it, so turning
# immutability off needs it deleted first (otherwise the app would write its state into a WORM container).
check_policy() {
  immutability_locked=false immutability_extend=false policy_days='' policy_etag=''
  [[ -n "$previous_account" && -n "$previous_container" ]] || return 0
  ((immutability_days > 0 || ${previous_immutability:-0} > 0)) || return 0
  local raw policy=() state
  raw="$(az storage container immutability-policy show --resource-group "$resource_group" \
    --account-name "$previous_account" --container-name "$previous_container" \
    --query '[state, immutabilityPeriodSinceCreationInDays, etag]' -o tsv | tr -d '\r')" ||
    die "could not read the immutability policy of container $previous_container in storage account $previous_account"
  mapfile -t policy <<<"$raw"
  state="${policy[0]-}" policy_days="${policy[1]-}" policy_etag="${policy[2]-}"
  case "$state" in
    Locked)
      immutability_locked=true
      if ((immutability_days < policy_days)); then
        die "the immutability policy of container $previous_container is locked at $policy_days days: it can be extended, never shortened or removed. Pass --immutability-days $policy_days or more."
      fi
      ((immutability_days == policy_days)) || immutability_extend=true
      ;;
    Unlocked)
      if ((immutability_days == 0)); then
        die "container $previous_container still has an unlocked ${policy_days}-day immutability policy, which a deployment does not remove, and the app would write its state into it: keep --immutability-days $policy_days, or delete the policy first: az storage container immutability-policy delete --resource-group $resource_group --account-name $previous_account --container-name $previous_container --if-match '$policy_etag'"
      fi
      ;;
    *)
      if ((immutability_days == 0)); then
        warn "immutable exports off again: the app keeps users/latest.json and its state in $previous_container again; readers read latest.json there (the copies in the state container are no longer updated)"
      fi
      ;;
  esac
}

# extend_policy: a locked policy grows only through its extend action, with the etag check_policy read.
extend_policy() {
  $immutability_extend || return 0
  az storage container immutability-policy extend --resource-group "$resource_group" \
    --account-name "$export_account" --container-name "$export_container" --period "$immutability_days" \
    --if-match "$policy_etag" -o none
  info "locked immutability policy extended from $policy_days to $immutability_days days"
}

# check_deleted_vault: a purge-protected vault stays soft-deleted for 90 days after its resource group is deleted
# (--destroy) and keeps its name: a deployment that would create it again fails ("A vault with the same name already
# exists in deleted state"). main.bicep names the vault kv-<prefix>-<hash of the group and the prefix>, so a deleted
# vault of that form from this resource group is that name. Listing deleted vaults needs read access on the
# subscription; without it the check is skipped, with a warning.
check_deleted_vault() {
  [[ "$credential" != federated ]] || return 0
  local raw name vault_id purge group_id
  if ! raw="$(az keyvault list-deleted --resource-type vault \
    --query "[?starts_with(name, 'kv-$name_prefix-')].[name, properties.vaultId, properties.scheduledPurgeDate]" \
    -o tsv 2>/dev/null | tr -d '\r')"; then
    warn "could not list the soft-deleted Key Vaults of subscription $subscription_id (az keyvault list-deleted needs read access on it): if an earlier deployment's vault is among them, the deployment fails"
    return 0
  fi
  group_id="/subscriptions/$subscription_id/resourcegroups/$resource_group/providers/microsoft.keyvault/vaults/"
  while IFS=$'\t' read -r name vault_id purge; do
    [[ -n "$name" && "${vault_id,,}" == "${group_id,,}"* ]] || continue
    local recover="az keyvault recover --name $name --resource-group $resource_group"
    [[ -n "$existing_location" ]] || recover="az group create --name $resource_group --location $location, then $recover"
    die "Key Vault $name, made by an earlier deployment to resource group $resource_group with --prefix $name_prefix, is soft-deleted with purge protection until $purge: Azure keeps the name and refuses a new vault of that name. Either recover it ($recover), then run this script again: it reuses the vault and replaces a secret that no longer works; or deploy with another --prefix (a new vault)."
  done <<<"$raw"
}

# --- export settings ----------------------------------------------------------------------------------------

# choose_export_settings: each of EXPORT_SETTINGS from its flag, else from the last deployment to this group (a plain
# re-run must not revert one: the deployment writes every app setting), else main.bicepparam's; then checked.
choose_export_settings() {
  local row variable flag param env origin i=0
  previous_export_settings
  log "Export settings (app settings; a flag not given keeps the last deployment's value)"
  for row in "${EXPORT_SETTINGS[@]}"; do
    read -r variable flag param env <<<"$row"
    origin="${variable}_source"
    if [[ -n "${!variable}" ]]; then
      printf -v "$origin" '%s' "$flag"
    elif [[ -n "${previous_settings[i]-}" && "${previous_settings[i]}" != None ]]; then
      printf -v "$variable" '%s' "${previous_settings[i]}"
      printf -v "$origin" '%s' 'the last deployment'
    else
      bicepparam_fallback "$variable" "$param" "$env" "$flag"
      printf -v "$origin" '%s' 'default'
    fi
    info "$param: ${!variable} (${!origin})"
    i=$((i + 1))
  done
  csv_excel="${csv_excel,,}" # az may print a bool parameter as True
  check_export_settings
}

# previous_export_settings: the last deployment's values of the EXPORT_SETTINGS parameters, in that order, into
# previous_settings (a deployment from before a parameter existed prints None for it).
previous_export_settings() {
  previous_settings=()
  [[ -n "$existing_location" ]] || return 0
  local row variable flag param env query='' raw
  for row in "${EXPORT_SETTINGS[@]}"; do
    read -r variable flag param env <<<"$row"
    query+="${query:+, }properties.parameters.$param.value"
  done
  raw="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" --query "[$query]" \
    -o tsv 2>/dev/null | tr -d '\r' || true)"
  [[ -z "$raw" ]] || mapfile -t previous_settings <<<"$raw"
}

# bicepparam_fallback VARIABLE PARAM ENV FLAG: sets VARIABLE to what main.bicepparam gives PARAM without ENV, from
# its one line `param PARAM = ...readEnvironmentVariable('ENV', '<value>')...`. Any other line for PARAM would
# keep FLAG from reaching the deployment, so that is refused.
bicepparam_fallback() {
  local file="$SCRIPT_DIR/main.bicepparam" lines value
  lines="$(grep -cE "^[[:space:]]*param[[:space:]]+$2[[:space:]]*=" "$file" || true)"
  value="$(sed -n "s/^param $2 = .*readEnvironmentVariable('$3', '\([^']*\)').*\$/\1/p" "$file")"
  [[ "$lines" == 1 && -n "$value" ]] ||
    die "infra/main.bicepparam must set $2 once, as param $2 = readEnvironmentVariable('$3', '<default>'): restore that line and pass the value with $4 instead"
  printf -v "$1" '%s' "$value"
}

# check_export_settings: the export settings known so far are ones the app accepts (graph_export/settings.py), so a
# typo stops here, before anything is created. The app checks the rest when it runs (property names against Graph's,
# the schedule as the Functions host reads it) and fails that run with one line saying what to change.
check_export_settings() {
  if [[ -n "$schedule" ]] && ! ncrontab_form "$schedule"; then
    die "--schedule takes 6 NCRONTAB fields, second minute hour day month day-of-week (UTC), of digits, names and * , - /, such as '0 0 2 * * *' (daily at 02:00); got '$schedule'$(setting_origin schedule)"
  fi
  [[ -z "$export_mode" || "$export_mode" =~ ^(full|delta)$ ]] ||
    die "--export-mode must be full or delta, got '$export_mode'$(setting_origin export_mode)"
  [[ -z "$formats" || "$formats" =~ ^(jsonl|jsonl,csv)$ ]] ||
    die "--formats must be jsonl or jsonl,csv (JSON Lines is always written), got '$formats'$(setting_origin formats)"
  [[ -z "$csv_excel" || "$csv_excel" =~ ^(true|false)$ ]] ||
    die "CSV_EXCEL must be true or false, got '$csv_excel'$(setting_origin csv_excel): pass --csv-excel or --no-csv-excel"
  [[ -z "$full_sync_days" || "$full_sync_days" =~ ^[0-7]$ ]] ||
    die "--full-sync-every-days must be a whole number of days from 0 to 7 (Graph expires delta links after 7 days), got '$full_sync_days'$(setting_origin full_sync_days)"
  if [[ -n "$user_properties" ]] && ! property_list "$user_properties"; then
    die "--user-properties takes comma-separated Graph user property names such as 'id,displayName,mail' (letters, digits, _), got '$user_properties'$(setting_origin user_properties)"
  fi
  if [[ "$export_mode" == delta ]] && selects "$user_properties" 'signInActivity|licenseAssignmentStates'; then
    die "USER_PROPERTIES '$user_properties' selects a property users/delta does not track (signInActivity, licenseAssignmentStates): remove it with --user-properties, or use --export-mode full"
  fi
}

# setting_origin VARIABLE: where a refused value came from, when not from its flag.
setting_origin() {
  local origin="${1}_source"
  case "${!origin}" in
    --* | '') ;;
    default) printf ' (from infra/main.bicepparam)' ;;
    *) printf ' (from %s)' "${!origin}" ;;
  esac
}

# ncrontab_form SCHEDULE: 6 space-separated fields of the characters NCRONTAB uses (the app checks the values).
ncrontab_form() {
  local fields=() field
  IFS=' ' read -r -a fields <<<"$1"
  ((${#fields[@]} == 6)) || return 1
  for field in "${fields[@]}"; do
    [[ "$field" =~ ^[0-9A-Za-z*/,-]+$ ]] || return 1
  done
}

# property_list LIST: comma-separated names of the form settings.py accepts, at least one (blank items are skipped).
property_list() {
  local items=() item count=0
  IFS=',' read -r -a items <<<"$1"
  for item in "${items[@]}"; do
    [[ "$item" =~ ^[[:space:]]*([A-Za-z][A-Za-z0-9_]*)?[[:space:]]*$ ]] || return 1
    [[ -z "${BASH_REMATCH[1]}" ]] || count=$((count + 1))
  done
  ((count > 0))
}

# selects LIST NAMES: whether the comma-separated LIST names one of NAMES (an extended regex alternation), in any
# case: Graph matches $select names case-insensitively, as the app does.
selects() { tr ',' '\n' <<<"$1" | tr -d ' \t' | grep -qixE "$2"; }

# --- app registration and consent -------------------------------------------------------------------------

role_name() {
  case "$1" in
    "$USER_READ_ALL_ROLE") printf 'User.Read.All' ;;
    "$AUDIT_LOG_READ_ALL_ROLE") printf 'AuditLog.Read.All' ;;
    *) printf '%s' "$1" ;;
  esac
}

# choose_graph_roles: User.Read.All always; AuditLog.Read.All too when USER_PROPERTIES selects signInActivity
# (Graph matches property names case-insensitively, as the app does).
choose_graph_roles() {
  graph_roles=("$USER_READ_ALL_ROLE")
  if selects "$user_properties" signInActivity; then
    graph_roles+=("$AUDIT_LOG_READ_ALL_ROLE")
    log "USER_PROPERTIES selects signInActivity: the app also needs Microsoft Graph AuditLog.Read.All (application), and the tenant an Entra ID P1 or P2 licence"
  fi
}

# find_app: the app registrations named exactly $app_name (--display-name would match every name that
# starts with it). Sets app_ids (one per line) and app_count.
find_app() {
  app_ids="$(az ad app list --filter "displayName eq '${app_name//\'/\'\'}'" --query '[].appId' -o tsv | tr -d '\r')"
  app_count="$(printf '%s' "$app_ids" | grep -c . || true)"
  if ((app_count > 1)); then
    die "$app_count app registrations are named '$app_name': pass --app-name with a unique name"
  fi
}

app_permission_help() {
  if [[ "$deployer_kind" == user ]]; then
    printf 'a user needs Application Administrator, Cloud Application Administrator or Application Developer'
  else
    printf 'a %s needs the Microsoft Graph application permission Application.ReadWrite.OwnedBy (owning the registration) or Application.ReadWrite.All' "$deployer_kind"
  fi
}

consent_help() {
  if [[ "$deployer_kind" == user ]]; then
    printf 'it needs Privileged Role Administrator or Global Administrator'
  else
    printf 'a %s needs the Microsoft Graph application permission AppRoleAssignment.ReadWrite.All' "$deployer_kind"
  fi
}

ensure_app_registration() {
  log "App registration '$app_name'"
  find_app
  if ((app_count == 1)); then
    client_id="$app_ids"
    info "reusing existing registration, client id $client_id"
  else
    local audience=AzureADMyOrg
    [[ -z "$tenant_ids" ]] || audience="$MULTI_TENANT"
    client_id="$(az ad app create --display-name "$app_name" --sign-in-audience "$audience" --query appId -o tsv |
      tr -d '\r')" || die "could not create the app registration: $(app_permission_help)"
    info "created, client id $client_id (signInAudience $audience)"
  fi
  ((app_count == 0)) || ensure_audience

  sp_id="$(az ad sp list --filter "appId eq '$client_id'" --query '[].id' -o tsv | tr -d '\r')"
  if [[ -z "$sp_id" ]]; then
    sp_id="$(retry "creating the service principal" az ad sp create --id "$client_id" --query id -o tsv | tr -d '\r')" ||
      die "could not create the service principal of app $client_id: $(app_permission_help)"
    info "service principal created"
  else
    info "service principal exists"
  fi

  local granted role
  granted="$(az ad app permission list --id "$client_id" \
    --query "[?resourceAppId=='$GRAPH_API_ID'].resourceAccess[].id" -o tsv | tr -d '\r')"
  for role in "${graph_roles[@]}"; do
    if grep -qx "$role" <<<"$granted"; then
      info "Microsoft Graph $(role_name "$role") (application) already requested"
    else
      # --only-show-errors: its warning to run `az ad app permission grant` is about delegated permissions.
      az ad app permission add --id "$client_id" --api "$GRAPH_API_ID" \
        --api-permissions "$role=Role" --only-show-errors -o none ||
        die "could not add the Graph permission $(role_name "$role") to app $client_id: $(app_permission_help)"
      info "requested Microsoft Graph $(role_name "$role") (application)"
    fi
  done
  if exports_tenant "$tenant_id"; then
    grant_consent
  else
    info "no consent in this tenant ($tenant_id): TENANT_IDS does not export it"
  fi
}

# grant_consent: admin consent for an application permission is an app role assignment on the app's
# service principal, made through this cloud's Graph (`az ad app permission admin-consent` uses an internal
# portal API that only the public cloud has, and that refuses service principals).
grant_consent() {
  graph_sp_id="$(az ad sp show --id "$GRAPH_API_ID" --query id -o tsv | tr -d '\r')" ||
    die "could not read Microsoft Graph's service principal in tenant $tenant_id"
  local consented body role name command
  consented="$(az rest --method GET --uri "$graph_url/v1.0/servicePrincipals/$sp_id/appRoleAssignments" \
    --query "value[?resourceId=='$graph_sp_id'].appRoleId" -o tsv | tr -d '\r')"
  for role in "${graph_roles[@]}"; do
    name="$(role_name "$role")"
    if grep -qx "$role" <<<"$consented"; then
      info "admin consent already granted ($name)"
      continue
    fi
    body="$(printf '{"principalId": "%s", "resourceId": "%s", "appRoleId": "%s"}' "$sp_id" "$graph_sp_id" "$role")"
    command="az rest --method POST --uri $graph_url/v1.0/servicePrincipals/$graph_sp_id/appRoleAssignedTo --body '$body'"
    if RETRIES=3 retry "granting admin consent ($name)" az rest --method POST \
      --uri "$graph_url/v1.0/servicePrincipals/$graph_sp_id/appRoleAssignedTo" --body "$body" -o none; then
      info "admin consent granted ($name for service principal $sp_id)"
    else
      pending_consent=true
      consent_commands+=("$command")
      warn "could not grant admin consent for $name: $(consent_help). Ask an administrator to run:"
      warn "  $command"
      if [[ "$role" == "$AUDIT_LOG_READ_ALL_ROLE" ]]; then
        warn "Exports fail with 403 Authentication_MSGraphPermissionMissing (signInActivity needs AuditLog.Read.All) until then."
      else
        warn "Exports fail with 403 Authorization_RequestDenied until then."
      fi
    fi
  done
}

# --- Bicep ----------------------------------------------------------------------------------------------

export_parameters() {
  export GRAPH_EXPORT_CLIENT_ID="$client_id"
  export GRAPH_EXPORT_CLIENT_CREDENTIAL="$credential"
  export GRAPH_EXPORT_NAME_PREFIX="$name_prefix"
  export GRAPH_EXPORT_ALERT_EMAIL="$alert_email"
  export GRAPH_EXPORT_VNET_ENABLED="$vnet"
  export GRAPH_EXPORT_GRAPH_ENDPOINT="$graph_url"
  export GRAPH_EXPORT_IMMUTABILITY_DAYS="$immutability_days"
  export GRAPH_EXPORT_IMMUTABILITY_LOCKED="$immutability_locked"
  export GRAPH_EXPORT_TENANT_IDS="$tenant_ids"
  local row variable flag param env
  for row in "${EXPORT_SETTINGS[@]}"; do
    read -r variable flag param env <<<"$row"
    export "$env=${!variable}"
  done
}

# ensure_app_provider: Flex Consumption VNet integration delegates a subnet to Microsoft.App/environments,
# which needs the Microsoft.App resource provider registered in the subscription (once).
ensure_app_provider() {
  local state
  state="$(az provider show --namespace Microsoft.App --query registrationState -o tsv 2>/dev/null | tr -d '\r' || true)"
  if [[ "$state" == Registered ]]; then
    return
  fi
  info "registering the Microsoft.App resource provider (VNet integration needs it; once per subscription)"
  az provider register --namespace Microsoft.App --wait -o none ||
    die "could not register Microsoft.App: it needs Contributor on subscription $subscription_id (or ask an administrator: az provider register --namespace Microsoft.App)"
}

deploy_bicep() {
  log "Deploying infra/main.bicep (a few minutes; unchanged resources are left as they are)"
  export_parameters
  if $vnet; then
    ensure_app_provider
  fi
  az deployment group create --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --parameters "$SCRIPT_DIR/main.bicepparam" -o none
  read_outputs
  [[ -n "$function_app" && -n "$identity_principal_id" ]] ||
    die "could not read the deployment outputs of $DEPLOYMENT_NAME in $resource_group"
  if [[ "$credential" != federated && ( -z "$key_vault" || -z "$key_vault_id" ) ]]; then
    die "the deployment $DEPLOYMENT_NAME in $resource_group has no Key Vault output for credential $credential"
  fi
  info "function app $function_app (identity $identity_name), exports in $export_account/$export_container"
  [[ -z "$state_container" || "$state_container" == "$export_container" ]] ||
    info "immutable exports ($immutability_days days): users/latest.json and the app's state in $export_account/$state_container"
  [[ -z "$key_vault" ]] || info "key vault $key_vault"
  [[ -z "$vnet_name" ]] || info "VNet $vnet_name: private endpoints for $host_account, $export_account${key_vault:+ and $key_vault}"
}

# read_outputs: -o tsv prints a list one item per line, an empty string as an empty line (keyVaultName is
# empty for federated): mapfile keeps every line in its place, where `read` would skip the empty ones.
read_outputs() {
  local raw outputs=()
  raw="$(az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
    --query '[properties.outputs.functionAppName.value, properties.outputs.keyVaultName.value, properties.outputs.keyVaultId.value, properties.outputs.clientSecretName.value, properties.outputs.clientCertificateName.value, properties.outputs.exportStorageAccountName.value, properties.outputs.exportContainerName.value, properties.outputs.identityName.value, properties.outputs.identityPrincipalId.value, properties.outputs.federatedCredentialIssuer.value, properties.outputs.federatedTokenAudience.value, properties.outputs.hostStorageAccountName.value, properties.outputs.vnetName.value, properties.outputs.appInsightsName.value, properties.outputs.stateContainerName.value, properties.outputs.exportQueueName.value, properties.outputs.poisonQueueName.value]' \
    -o tsv | tr -d '\r')"
  mapfile -t outputs <<<"$raw"
  function_app="${outputs[0]-}" key_vault="${outputs[1]-}" key_vault_id="${outputs[2]-}" secret_name="${outputs[3]-}"
  certificate_name="${outputs[4]-}" export_account="${outputs[5]-}" export_container="${outputs[6]-}"
  identity_name="${outputs[7]-}" identity_principal_id="${outputs[8]-}"
  federated_issuer="${outputs[9]-}" federated_audience="${outputs[10]-}" host_account="${outputs[11]-}"
  vnet_name="${outputs[12]-}" app_insights="${outputs[13]-}" state_container="${outputs[14]-}"
  export_queue="${outputs[15]-}" poison_queue="${outputs[16]-}"
  local name
  for name in function_app key_vault key_vault_id secret_name certificate_name export_account export_container \
    identity_name identity_principal_id federated_issuer federated_audience host_account vnet_name app_insights \
    state_container export_queue poison_queue; do
    [[ "${!name}" != None ]] || printf -v "$name" '%s' ''
  done
}

# --- Key Vault access for the deployer -----------------------------------------------------------------------
#
# secret: whoever runs this script holds Key Vault Secrets Officer (which includes reading the secret) only
# during a run that creates or replaces the secret: on the whole vault while it does not exist, else on the
# secret; removed at the end of the run (and on any failure). Other runs check the secret through Azure Resource
# Manager, which shows its attributes, never its value. certificate: Certificates Officer (which cannot read the
# private key) stays on the one certificate, so that later runs can read and register a renewed version; on the
# whole vault only until the certificate exists.

# vault_probe KIND NAME QUERY: one data-plane read of the KIND (secret | certificate) NAME, printing only
# QUERY (never a secret value). Sets probe (ok | missing | disabled | denied) and probe_fields (QUERY's
# values, one per line). Dies when the vault refuses this network (--vnet: public network access disabled).
vault_probe() {
  local kind="$1" name="$2" query="$3" out rc=0 errors="$workdir/vault-error"
  out="$(az keyvault "$kind" show --vault-name "$key_vault" --name "$name" --query "$query" -o tsv \
    2>"$errors" | tr -d '\r')" || rc=$?
  probe_fields=()
  if ((rc == 0)); then
    probe=ok
    mapfile -t probe_fields <<<"$out"
  elif grep -qiE 'ForbiddenByConnection|ForbiddenByFirewall|public network access is disabled|not a trusted service' "$errors"; then
    die "Key Vault $key_vault refuses requests from this network: with --vnet it answers only through its private endpoint in VNet ${vnet_name:-of the deployment}. Run infra/deploy.sh from a machine in that VNet (or a network peered or connected to it), or use --credential federated, which needs no vault."
  elif grep -qiE 'SecretDisabled|disabled secret' "$errors"; then
    probe=disabled
  elif ((rc == 3)) || grep -qiE 'SecretNotFound|CertificateNotFound' "$errors"; then
    probe=missing
  else
    probe=denied
  fi
}

# role_assignment ROLE SCOPE: the id of the deployer's assignment of ROLE at exactly SCOPE (empty if none).
role_assignment() {
  az role assignment list --assignee-object-id "$deployer_id" --role "$1" --scope "$2" --query '[].id' -o tsv | tr -d '\r'
}

# ensure_role ROLE SCOPE: assign ROLE at SCOPE to the deployer unless it has it; prints the assignment id.
ensure_role() {
  local existing
  existing="$(role_assignment "$1" "$2")"
  if [[ -n "$existing" ]]; then
    printf '%s\n' "$existing" | head -n 1
    return
  fi
  az role assignment create --assignee-object-id "$deployer_id" --assignee-principal-type "$deployer_type" \
    --role "$1" --scope "$2" --query id -o tsv | tr -d '\r'
}

# vault_access KIND NAME ROLE ROLE_NAME QUERY [SCOPE]: make sure the deployer can read (and write) the KIND NAME,
# and probe it (vault_probe). Without access: ROLE at SCOPE (default: the whole vault) for this run, removed by
# vault_access_narrow, drop_secret_roles or on exit.
vault_access() {
  local kind="$1" name="$2" role="$3" role_name="$4" query="$5" scope="${6:-$key_vault_id}" attempt=1
  vault_probe "$kind" "$name" "$query"
  [[ "$probe" == denied ]] || return 0
  temporary_role_id="$(ensure_role "$role" "$scope")" ||
    die "could not give you $role_name on $key_vault: assigning roles needs Owner or User Access Administrator on the resource group"
  info "gave you $role_name on ${scope##*/} while this run needs it"
  while vault_probe "$kind" "$name" "$query" && [[ "$probe" == denied ]]; do
    if ((attempt >= RETRY_COUNT)); then
      die "still no access to the ${kind}s of $key_vault after $attempt tries: you need '$role_name' on it. Last error: $(tr '\n' ' ' <"$workdir/vault-error")"
    fi
    info "waiting for the role to apply: retrying in ${RETRY_DELAY}s ($attempt/$RETRY_COUNT)"
    sleep "$RETRY_DELAY"
    attempt=$((attempt + 1))
  done
}

# vault_access_narrow KIND NAME ROLE ROLE_NAME: the deployer keeps ROLE on the KIND NAME only; any
# vault-wide assignment of ROLE it has (the temporary one, or one an older version of this template made)
# is removed.
vault_access_narrow() {
  local kind="$1" name="$2" role="$3" role_name="$4" ids id
  ensure_role "$role" "$key_vault_id/${kind}s/$name" >/dev/null ||
    die "could not give you $role_name on the $kind $name: assigning roles needs Owner or User Access Administrator on the resource group"
  ids="$(role_assignment "$role" "$key_vault_id")"
  for id in $ids; do
    az role assignment delete --ids "$id" -o none
    info "removed your $role_name on the whole vault: you keep it on the $kind $name only"
  done
  temporary_role_id=''
}

# --- the credential -------------------------------------------------------------------------------------

# if_stdin COMMAND...: run COMMAND with this stdin only if there is at least one byte of it, else fail without
# running it: a failed `az ad app credential reset` prints nothing, and `az keyvault secret set --file
# /dev/stdin` would store that empty string. The first character passes through a local variable, never a
# file, an argument or the terminal.
if_stdin() {
  local first=''
  if ! IFS= read -r -n 1 first || [[ -z "$first" ]]; then
    printf 'ERROR: no client secret to store: refusing to write an empty secret\n' >&2
    return 1
  fi
  { printf '%s' "$first"; cat; } | "$@"
}

# drop_secret_roles: the deployer keeps no Key Vault Secrets Officer on the vault or the secret (the role reads
# values): neither this run's nor the lasting one earlier versions of this script left on the secret.
drop_secret_roles() {
  local ids id
  ids="$(role_assignment "$SECRETS_OFFICER" "$key_vault_id"; role_assignment "$SECRETS_OFFICER" "$key_vault_id/secrets/$secret_name")"
  for id in $ids; do
    az role assignment delete --ids "$id" -o none
  done
  [[ -z "$ids" ]] || info "removed your Key Vault Secrets Officer: you keep no access to the secret (--rotate-secret grants it again for its run)"
  temporary_role_id=''
}

# password_ids LABEL: key ids of the app's client secrets named LABEL.
password_ids() {
  az ad app credential list --id "$client_id" --query "[?displayName=='$1'].keyId" -o tsv | tr -d '\r'
}

# secret_label: the display name of the client secrets this deployment puts on the app registration.
secret_label() { printf 'graph-export %s' "$key_vault"; }

# check_stored_secret: sets secret_problem to why the stored client secret cannot be kept (empty when it can;
# "missing" when there is none). Read through Azure Resource Manager (az resource show: the secret's attributes,
# never its value), which needs no Key Vault role and no network path to the vault. A secret whose credential the
# app registration no longer has (deleted by --destroy, then the vault recovered; another registration) cannot
# sign in.
check_stored_secret() {
  local raw fields=() rc=0
  raw="$(az resource show --ids "$key_vault_id/secrets/$secret_name" --api-version "$KEYVAULT_API" \
    --query '[properties.attributes.enabled, properties.attributes.exp]' -o tsv 2>"$workdir/arm-error" |
    tr -d '\r')" || rc=$?
  secret_problem=''
  if ((rc == 3)); then
    secret_problem='missing'
    return
  fi
  ((rc == 0)) || die "could not read secret $secret_name of Key Vault $key_vault (az resource show): $(tr '\n' ' ' <"$workdir/arm-error")"
  mapfile -t fields <<<"$raw"
  local enabled="${fields[0]-}" exp="${fields[1]-}"
  if [[ "$enabled" != true ]]; then
    secret_problem='it is disabled'
  elif [[ "$exp" =~ ^[0-9]+$ ]] && ((exp <= $(date +%s))); then
    secret_problem="it expired on $(utc_time "$exp")"
  elif [[ -z "$(password_ids "$(secret_label)")" ]]; then
    secret_problem="app registration $client_id has no client secret named '$(secret_label)' (deleted, e.g. by --destroy)"
  fi
}

# utc_time SECONDS: a Unix time as an ISO 8601 UTC timestamp (GNU date, then BSD/macOS date).
utc_time() {
  date -u -d "@$1" '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null || date -u -r "$1" '+%Y-%m-%dT%H:%M:%SZ'
}

store_client_secret() {
  log "Client secret in Key Vault $key_vault (secret '$secret_name')"
  check_stored_secret
  if [[ -z "$secret_problem" ]] && ! $rotate_secret; then
    info "already set; keeping it (pass --rotate-secret for a new one)"
  else
    case "$secret_problem" in
      '') info "--rotate-secret: replacing it" ;;
      missing) ;;
      *) info "the vault holds secret '$secret_name', but $secret_problem: replacing it" ;;
    esac
    # Officer on the secret can write a new version of it; only a new secret needs the whole vault.
    local scope="$key_vault_id"
    [[ "$secret_problem" == missing ]] || scope="$key_vault_id/secrets/$secret_name"
    vault_access secret "$secret_name" "$SECRETS_OFFICER" 'Key Vault Secrets Officer' 'attributes.enabled' "$scope"
    write_client_secret
    verify_client_secret
    revoke_previous_secrets
  fi
  drop_secret_roles
}

write_client_secret() {
  local expires label before after created
  expires="$(future_date "$secret_years")"
  label="$(secret_label)"
  before="$(password_ids "$label")"
  # The password goes from Entra ID to Key Vault through a pipe: never a variable, file, argument or echo.
  # The credential's end date and the secret's expiry are the same instant: the app warns from Key Vault's
  # `expires` ("Credential expiry: ...") before Entra ID starts refusing the secret.
  if az ad app credential reset --id "$client_id" --append --display-name "$label" \
    --end-date "$expires" --query password -o tsv |
    tr -d '\r\n' |
    if_stdin az keyvault secret set --vault-name "$key_vault" --name "$secret_name" --file /dev/stdin \
      --encoding utf-8 --expires "$expires" --content-type "client secret of app $client_id" -o none; then
    new_secret_ids="$(comm -13 <(sort <<<"$before") <(sort <<<"$(password_ids "$label")") | grep . || true)"
    info "new client secret stored (expires $expires)"
    return
  fi
  # Nothing valid may exist outside the vault: delete a credential the reset made but the vault did not take.
  after="$(password_ids "$label")"
  created="$(comm -13 <(sort <<<"$before") <(sort <<<"$after") | grep . || true)"
  if [[ -z "$created" ]]; then
    die "no client secret was created (az ad app credential reset failed, see above: $(app_permission_help)); nothing was stored in Key Vault"
  fi
  local id
  for id in $created; do
    if az ad app credential delete --id "$client_id" --key-id "$id" -o none; then
      info "deleted the new client secret $id from the app registration: the vault did not take it"
    else
      warn "could not delete the new client secret $id, which is not in the vault: az ad app credential delete --id $client_id --key-id $id"
    fi
  done
  die "the new client secret could not be stored in Key Vault $key_vault (see the error above); the previous secret, if any, is unchanged"
}

# verify_client_secret: one client-credentials token request to this cloud's Entra ID with the secret as Key Vault
# now holds it, before anything earlier is revoked. A brand-new secret can take a moment to be accepted
# (AADSTS7000215 meanwhile): retried.
verify_client_secret() {
  if retry "signing in with the new client secret" sign_in_with_secret; then
    info "signed in to Entra ID with the new client secret"
    return
  fi
  die "Entra ID refused the new client secret, which Key Vault $key_vault now holds as '$secret_name': $(tr '\n' ' ' <"$workdir/signin-error")The earlier client secrets were left valid. Run this script again with --rotate-secret; if it keeps failing, compare the app registration's secrets: az ad app credential list --id $client_id"
}

# sign_in_with_secret: the secret goes from Key Vault into the request body through a pipe (never an argument,
# a variable or a file), az rest adds no token of the operator's (whose az login stays as it is), and only the
# token's type is printed, never the token.
sign_in_with_secret() {
  : >"$workdir/signin-error"
  az keyvault secret show --vault-name "$key_vault" --name "$secret_name" --query value -o tsv 2>>"$workdir/signin-error" |
    tr -d '\r\n' | token_request_body |
    az rest --method POST --uri "$login_url/$tenant_id/oauth2/v2.0/token" --skip-authorization-header \
      --headers 'Content-Type=application/x-www-form-urlencoded' --body @- --query token_type -o tsv \
      2>>"$workdir/signin-error" >/dev/null
}

# token_request_body: a client-credentials form body for this app and Microsoft Graph, with stdin (the secret)
# form-encoded as client_secret, last.
token_request_body() {
  printf 'grant_type=client_credentials&client_id=%s&scope=%s&client_secret=' "$client_id" "$graph_url/.default"
  sed -e 's/%/%25/g' -e 's/&/%26/g' -e 's/+/%2B/g' -e 's/=/%3D/g' -e 's/ /%20/g'
}

# revoke_previous_secrets: once the new secret works, the client secrets this deployment made before it (named
# after its vault) are deleted from the app registration, so a rotation after a leak cuts the leaked one off.
# Other deployments' and other tools' secrets on the registration stay; --keep-previous-secret keeps them all.
revoke_previous_secrets() {
  local id count=0
  if $keep_previous_secret; then
    info "earlier client secrets stay valid until they expire (--keep-previous-secret): az ad app credential list --id $client_id"
    return
  fi
  if [[ -z "$new_secret_ids" ]]; then
    warn "could not tell the new client secret apart from the earlier ones, so none was revoked: az ad app credential list --id $client_id"
    return
  fi
  for id in $(password_ids "$(secret_label)"); do
    grep -qxF "$id" <<<"$new_secret_ids" && continue
    az ad app credential delete --id "$client_id" --key-id "$id" -o none
    count=$((count + 1))
  done
  ((count == 0)) || info "revoked $count earlier client secret(s) of this deployment (--keep-previous-secret keeps them)"
}

# ensure_certificate: the Key Vault certificate (created with infra/certificate-policy.json: self-signed,
# RSA 2048, exportable key, PKCS#12, renews itself at 80% of its 12-month lifetime) and its current
# version's public key registered on the app registration. Key Vault's renewal makes a new certificate
# (new key, new thumbprint) which Entra ID does not know: until it is registered, which every run of this
# script does, the app signs in with the previous version (still valid) and logs "Credential expiry: …". The private key never leaves the vault except into
# the function's memory: only the public part is read here, by `az ad app credential reset --keyvault`.
ensure_certificate() {
  log "Client certificate in Key Vault $key_vault (certificate '$certificate_name')"
  vault_access certificate "$certificate_name" "$CERTIFICATES_OFFICER" 'Key Vault Certificates Officer' \
    '[x509ThumbprintHex, attributes.expires]'

  if [[ "$probe" == missing ]] || $rotate_certificate; then
    az keyvault certificate create --vault-name "$key_vault" --name "$certificate_name" \
      --policy "@$SCRIPT_DIR/certificate-policy.json" -o none
    info "new certificate version created (self-signed, RSA 2048; Key Vault renews it at 80% of its lifetime)"
    vault_probe certificate "$certificate_name" '[x509ThumbprintHex, attributes.expires]'
  else
    info "exists; keeping it (pass --rotate-certificate for a new version now)"
  fi
  certificate_thumbprint="${probe_fields[0]-}"
  local expires="${probe_fields[1]-}"
  [[ "$probe" == ok && -n "$certificate_thumbprint" && -n "$expires" ]] ||
    die "could not read the thumbprint and expiry of certificate $certificate_name in $key_vault"

  # The app registration's key credential is named after the vault and the thumbprint, so a version
  # registered before is recognised (Graph's own customKeyIdentifier encoding differs between tools) and
  # --destroy finds this deployment's keys. "graph-export <thumbprint>" is the name older runs gave.
  local label="graph-export $key_vault $certificate_thumbprint" registered
  registered="$(az ad app credential list --id "$client_id" --cert \
    --query "[?displayName=='$label' || displayName=='graph-export $certificate_thumbprint'].keyId" -o tsv | tr -d '\r')"
  if [[ -n "$registered" ]]; then
    info "public key already registered on the app (thumbprint $certificate_thumbprint, expires $expires)"
  else
    # --append keeps the earlier certificates (and any secret) valid until they expire; the key credential
    # ends when the certificate does.
    az ad app credential reset --id "$client_id" --append --cert "$certificate_name" --keyvault "$key_vault" \
      --display-name "$label" --end-date "$expires" -o none
    info "public key registered on the app (thumbprint $certificate_thumbprint, expires $expires)"
    info "earlier certificates stay registered until they expire: az ad app credential list --id $client_id --cert"
  fi
  vault_access_narrow certificate "$certificate_name" "$CERTIFICATES_OFFICER" 'Key Vault Certificates Officer'
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

# --- the code -------------------------------------------------------------------------------------------

# package ZIP: the repository's files that git sees (tracked, or untracked and not .gitignore'd),
# minus those matched by .funcignore (gitignore syntax, so git applies it).
package() {
  local zip_path="$1" list
  list="$workdir/files.txt"
  command -v git >/dev/null || die "git is needed to package the code (it applies .funcignore)"
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
    rm -f "$zip_path"
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

# publish: one upload with a bounded wait. For Flex Consumption, config-zip waits (--timeout) for the remote
# build and deployment, then for about two minutes for the Functions host to report healthy; it is not
# retried, because a host that cannot start would make every retry wait the same way.
publish() {
  log "Publishing the code to $function_app (remote build installs requirements.txt; waits at most ${publish_timeout}s + the health check)"
  package "$workdir/app.zip"
  local errors="$workdir/publish-error"
  if az functionapp deployment source config-zip --resource-group "$resource_group" --name "$function_app" \
    --src "$workdir/app.zip" --build-remote true --timeout "$publish_timeout" -o none 2>&1 | tee "$errors" >&2; then
    info "published"
    return
  fi
  if grep -q 'appears to be unhealthy' "$errors"; then
    if wait_for_host; then
      info "published: the host reports Running (after az stopped waiting for it)"
      return
    fi
    printf 'ERROR: the code reached %s, but its Functions host did not report healthy (last state: %s%s). Check, in this order:\n' \
      "$function_app" "$host_state" "${host_errors:+; host errors: $host_errors}" >&2
    printf '  - host storage %s: identity %s needs Storage Blob Data Owner and Storage Queue Data Contributor\n' "$host_account" "$identity_name" >&2
    printf '    on it (a new role assignment can take up to 10 minutes to apply);\n' >&2
    printf '  - the app settings AzureWebJobsStorage__blobServiceUri/__queueServiceUri,\n' >&2
    printf '    __credential=managedidentity and __clientId (the client id of %s);\n' "$identity_name" >&2
    if [[ -n "$vnet_name" ]]; then
      printf '  - --vnet: the private endpoints of %s (blob, queue) and their privatelink DNS zones, linked to %s;\n' "$host_account" "$vnet_name" >&2
    fi
    printf '  - the host'"'"'s own log: Application Insights %s (traces), or\n' "${app_insights:-of the app}" >&2
    printf '    az functionapp log deployment show --resource-group %s --name %s\n' "$resource_group" "$function_app" >&2
    die "fix the first of these that applies, then run infra/deploy.sh --resource-group $resource_group again (it republishes; nothing else changes)"
  elif grep -q 'Timeout reached' "$errors"; then
    die "the deployment to $function_app did not finish within --publish-timeout ${publish_timeout}s and may still be running: az functionapp log deployment show --resource-group $resource_group --name $function_app. Run this script again once it is done (or with a longer --publish-timeout)."
  elif grep -q 'ongoing deployment' "$errors"; then
    die "another deployment to $function_app is still running: wait for it (az functionapp log deployment show --resource-group $resource_group --name $function_app), then run this script again"
  fi
  die "publishing to $function_app failed (see the az error above); run this script again to retry"
}

# wait_for_host: az's Flex publish gives the host about 90 s after the deployment (60 s, then 15 polls of 2 s) to
# report healthy, less than a cold Python start after a remote build can take. Poll the host status through Azure
# Resource Manager (the portal's call; no function key) for up to RETRY_COUNT x RETRY_DELAY s (5 min) more.
wait_for_host() {
  local url="/subscriptions/$subscription_id/resourceGroups/$resource_group/providers/Microsoft.Web/sites/$function_app/host/default/properties/status?api-version=$WEB_API"
  host_state='unknown' host_errors=''
  info "az stopped waiting for the host; asking for its status for up to $((RETRY_COUNT * RETRY_DELAY)) s more"
  retry "the Functions host of $function_app" host_running "$url"
}

# host_running URL: whether the host status at URL is Running; sets host_state and host_errors.
host_running() {
  local raw fields=()
  # shellcheck disable=SC2016 # backquotes are JMESPath literals
  raw="$(az rest --method get --uri "$1" --query '[properties.state, join(`; `, properties.errors || `[]`)]' \
    -o tsv 2>/dev/null | tr -d '\r')" || raw=''
  mapfile -t fields <<<"$raw"
  host_state="${fields[0]:-unknown}" host_errors="${fields[1]-}"
  [[ "$host_state" == Running ]]
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
  if [[ -n "$state_container" && "$state_container" != "$export_container" ]]; then
    info "                immutable for $immutability_days days; users/latest.json and the state in '$state_container'"
  fi
  if [[ -n "$vnet_name" ]]; then
    info "network:        VNet $vnet_name, private endpoints; public network access disabled"
  fi
  tenants_summary
  if $pending_consent; then
    local command
    for command in "${consent_commands[@]}"; do
      warn "admin consent is still missing: $command"
    done
  fi
  info "next:           one export now: infra/deploy.sh --resource-group $resource_group --run-now"
  info "                read access for a person or pipeline: infra/deploy.sh --resource-group $resource_group --reader <principal>"
}

# --- using a deployment -------------------------------------------------------------------------------------

# use_deployment: --reader and --run-now act on the group's existing deployment (its outputs); nothing else changes.
use_deployment() {
  az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" -o none 2>/dev/null ||
    die "no deployment '$DEPLOYMENT_NAME' in resource group $resource_group: deploy first (infra/deploy.sh --resource-group $resource_group --location <region>)"
  read_outputs
  [[ -n "$function_app" && -n "$export_account" && -n "$export_container" ]] ||
    die "could not read the deployment outputs of $DEPLOYMENT_NAME in $resource_group"
  ((${#readers[@]} == 0)) || grant_readers
  if $run_now; then
    run_export_now
  fi
  log "Done"
}

# grant_readers: Storage Blob Data Reader for each --reader on the export container, and on the state container
# where users/latest.json lives when exports are immutable: read-only, those containers only. az resolves the
# principal through Graph (a user's UPN or object id, a service principal's app id or object id, a group's object id).
grant_readers() {
  local reader container scope
  local containers=("$export_container")
  [[ -z "$state_container" || "$state_container" == "$export_container" ]] || containers+=("$state_container")
  log "Read access to the exports in storage account $export_account"
  for reader in "${readers[@]}"; do
    for container in "${containers[@]}"; do
      scope="/subscriptions/$subscription_id/resourceGroups/$resource_group/providers/Microsoft.Storage/storageAccounts/$export_account/blobServices/default/containers/$container"
      az role assignment create --assignee "$reader" --role "$BLOB_DATA_READER" --scope "$scope" -o none ||
        die "could not give '$reader' Storage Blob Data Reader on container $container (see the az error above): pass a user's UPN or object id, a service principal's app id or object id, or a group's object id; resolving it needs read access to the directory, assigning it Owner or User Access Administrator on the resource group"
      info "$reader: Storage Blob Data Reader on container $container"
    done
  done
  info "a new role assignment takes up to 10 minutes to apply; then the newest export's pointer is read with"
  info "  az storage blob download --auth-mode login --account-name $export_account --container-name ${state_container:-$export_container} --name users/latest.json --file latest.json"
  [[ -z "$vnet_name" ]] || info "  from inside VNet $vnet_name (the account has no public network access)"
}

# run_export_now: one export now, as the portal's Test/Run does: POST /admin/functions/<name> on the app's host with
# its master key and {"input": ""} (Functions docs, "Manually run a non HTTP-triggered function"). The key goes
# from az into the request's header through a pipe only. The host accepts at once (202) and runs the export in
# the background: this waits for nothing, and says where its log and result appear.
run_export_now() {
  local host
  log "Starting one export now in $function_app"
  host="$(az functionapp show --resource-group "$resource_group" --name "$function_app" --query defaultHostName -o tsv |
    tr -d '\r')"
  [[ -n "$host" ]] || die "could not read the host name of function app $function_app"
  az functionapp keys list --resource-group "$resource_group" --name "$function_app" --query masterKey -o tsv |
    tr -d '\r\n' | sed 's/.*/{"x-functions-key": "&"}/' |
    az rest --method post --uri "https://$host/admin/functions/$FUNCTION_NAME" --skip-authorization-header \
      --headers @- --body '{"input": ""}' -o none ||
    die "the function host of $function_app did not take the request (see the az error above): it must be running (infra/deploy.sh --resource-group $resource_group republishes), and reading its master key needs Contributor or Website Contributor on it"
  info "started: $FUNCTION_NAME runs in Azure now (a large tenant takes minutes to hours)"
  info "its log:    Azure portal > function app $function_app > Functions > $FUNCTION_NAME > Invocations, or"
  info "  az monitor app-insights query --app $app_insights --resource-group $resource_group --offset 1h --analytics-query 'traces | where operation_Name == \"$FUNCTION_NAME\" | project timestamp, message | order by timestamp asc'"
  info "its result: the log's last line, 'Export succeeded: <users> users in <pages> pages -> <container>/<blob> ...'"
  info "  (or 'Export failed: <what to fix>'), and users/latest.json in container ${state_container:-$export_container} of $export_account:"
  info "  az storage blob download --auth-mode login --account-name $export_account --container-name ${state_container:-$export_container} --name users/latest.json --file latest.json"
  info "  (reading it needs Storage Blob Data Reader: infra/deploy.sh --resource-group $resource_group --reader <you>)"
}

# --- preview and teardown ---------------------------------------------------------------------------------

preview() {
  log "Preview (--what-if): nothing is created or changed"
  if [[ -z "$existing_location" ]]; then
    info "would create resource group $resource_group in $location"
  fi
  find_app
  if ((app_count == 1)); then
    client_id="$app_ids"
    info "would reuse app registration '$app_name' (client id $client_id)"
  else
    client_id="$PLACEHOLDER_CLIENT_ID"
    info "would create app registration '$app_name', request User.Read.All and grant admin consent"
  fi
  if ((${#graph_roles[@]} > 1)); then
    info "would request and grant AuditLog.Read.All too: USER_PROPERTIES selects signInActivity"
  fi
  if [[ -n "$tenant_ids" ]]; then
    info "would make the registration multi-tenant ($MULTI_TENANT) and export $(tr ',' ' ' <<<"$tenant_ids"); then each other tenant's administrator opens its admin-consent URL (printed after a deployment)"
  fi
  if [[ -z "$existing_location" ]]; then
    info "ARM what-if needs an existing resource group: every resource of infra/main.bicep would be created"
  else
    export_parameters
    log "az deployment group what-if (client id $client_id)"
    az deployment group what-if --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" \
      --parameters "$SCRIPT_DIR/main.bicepparam"
  fi
  case "$credential" in
    secret) info "then: a client secret in the vault, unless a valid one is there (--rotate-secret: a new one)" ;;
    certificate) info "then: the certificate in the vault and its public key on the app registration" ;;
    federated) info "then: the federated credential on the app registration" ;;
  esac
  if $immutability_extend; then
    info "then: extend the locked immutability policy from $policy_days to $immutability_days days"
  fi
  $skip_publish || info "then: publish the code (infra/deploy.sh --package FILE shows what it contains)"
  log "Preview done: nothing was changed"
}

confirm_destroy() {
  $assume_yes && return
  [[ -t 0 ]] || die "--destroy deletes resource group $resource_group and everything in it: pass --yes to confirm when not running interactively"
  printf 'This deletes resource group %s and everything in it. Type its name to confirm: ' "$resource_group" >&2
  local answer=''
  IFS= read -r answer || true
  [[ "$answer" == "$resource_group" ]] || die "not confirmed: nothing was deleted"
}

# remove_app_credentials: what this deployment put on the app registration: its client secrets (named
# after its vault), its certificates' public keys (named after the vault), and its federated credential
# (named after its identity). Other deployments' credentials on the same registration stay.
remove_app_credentials() {
  local ids id
  if [[ -n "$key_vault" ]]; then
    ids="$(password_ids "$(secret_label)")"
    for id in $ids; do
      az ad app credential delete --id "$client_id" --key-id "$id" -o none
      info "deleted client secret $id"
    done
    ids="$(az ad app credential list --id "$client_id" --cert \
      --query "[?starts_with(displayName || '', 'graph-export $key_vault ')].keyId" -o tsv | tr -d '\r')"
    for id in $ids; do
      az ad app credential delete --id "$client_id" --key-id "$id" --cert -o none
      info "deleted certificate key $id"
    done
  fi
  if [[ -n "$identity_name" ]]; then
    ids="$(az ad app federated-credential list --id "$client_id" \
      --query "[?name=='graph-export-$identity_name'].id" -o tsv | tr -d '\r')"
    for id in $ids; do
      az ad app federated-credential delete --id "$client_id" --federated-credential-id "$id" -o none
      info "deleted federated credential graph-export-$identity_name"
    done
  fi
}

destroy() {
  log "Removing the deployment in resource group $resource_group (--destroy)"
  confirm_destroy
  existing_location="$(az group show --name "$resource_group" --query location -o tsv 2>/dev/null | tr -d '\r' || true)"
  key_vault='' identity_name=''
  if [[ -n "$existing_location" ]] &&
    az deployment group show --resource-group "$resource_group" --name "$DEPLOYMENT_NAME" -o none 2>/dev/null; then
    read_outputs
  fi

  find_app
  if ((app_count == 1)); then
    client_id="$app_ids"
    log "App registration '$app_name' ($client_id)"
    if $delete_app; then
      az ad app delete --id "$client_id" -o none
      info "deleted, with all its credentials and its service principal"
    elif [[ -z "$key_vault$identity_name" ]]; then
      warn "no deployment '$DEPLOYMENT_NAME' in $resource_group: its credentials on the app registration cannot be told apart from others, so none are removed (az ad app credential list --id $client_id)"
    else
      remove_app_credentials
      info "the registration itself stays (pass --delete-app-registration to delete it)"
    fi
  else
    info "no app registration named '$app_name'"
  fi

  if [[ -n "$existing_location" ]]; then
    log "Deleting resource group $resource_group (several minutes)"
    az group delete --name "$resource_group" --yes -o none
    info "deleted"
  else
    info "resource group $resource_group does not exist"
  fi
  if [[ -n "$key_vault" ]]; then
    warn "Key Vault $key_vault is now soft-deleted with purge protection: its name stays reserved for 90 days and"
    warn "nobody can purge it earlier. A new deployment with the same resource group name and --prefix reuses that"
    warn "name, which Azure refuses, until you either recover it (az group create --name $resource_group --location"
    warn "<region>, then az keyvault recover --name $key_vault --resource-group $resource_group, then deploy: it is"
    warn "reused with its contents) or deploy with another --prefix."
  fi
  log "Done"
}

main() {
  parse_args "$@"
  workdir="$(mktemp -d)"
  if [[ "$mode" == package ]]; then
    log "Packaging the code into $package_path"
    local target
    target="$(cd "$(dirname "$package_path")" && pwd)/$(basename "$package_path")"
    package "$target"
    return
  fi
  preflight
  if [[ "$mode" == destroy ]]; then
    destroy
    return
  fi
  if [[ "$mode" == use ]]; then
    use_deployment
    return
  fi
  check_region
  previous_deployment
  choose_credential
  check_deleted_vault
  choose_network
  choose_immutability
  choose_export_settings
  choose_tenants
  choose_graph_roles
  if [[ "$mode" == what-if ]]; then
    preview
    return
  fi
  ensure_resource_group
  ensure_app_registration
  deploy_bicep
  extend_policy
  configure_credential
  if $skip_publish; then
    log "Skipping code publishing (--skip-publish)"
  else
    publish
  fi
  summary
}

main "$@"
