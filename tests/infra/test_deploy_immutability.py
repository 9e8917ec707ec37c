"""infra/deploy.sh --immutability-days (immutable exports, WORM), against the fake `az` (fake_az.py): the days
reach main.bicepparam, a plain re-run keeps them, a retention shorter than the policy is refused before anything
is created, and the export container's policy is respected as it stands: a locked one is left to the deployment
untouched (ARM accepts no write to it but an extension), grows only through `extend`, and is never shortened
or removed; an unlocked one must be deleted before immutability can be turned off.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from .fake_azure import NAMES, FakeAzure, deploy, deployed, opt

RG = "rg-export"
SHOW = "storage container immutability-policy show"
EXTEND = "storage container immutability-policy extend"


def parameters(fake: FakeAzure) -> tuple[str, str]:
    env = fake.call("deployment group create")["env"]
    return env["GRAPH_EXPORT_IMMUTABILITY_DAYS"], env["GRAPH_EXPORT_IMMUTABILITY_LOCKED"]


def policy(fake: FakeAzure) -> dict | None:
    found = fake.state["immutability_policy"]
    return found and {"state": found["state"], "days": found["days"]}


def immutable(tmp_path, days: int = 30) -> FakeAzure:
    """A group whose last deployment (deploy.sh) made the exports immutable for `days` days."""
    fake = FakeAzure(tmp_path)
    deployed(fake, "--immutability-days", str(days))
    return fake


@pytest.mark.parametrize("value", ["-1", "abc", "3651", "07", "1.5", ""])
def test_a_bad_value_is_refused_before_any_az_call(tmp_path, value):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, "--immutability-days", value)
    assert proc.returncode == 1
    assert "--immutability-days" in proc.stderr and ("0 (off) to 3650" in proc.stderr or "needs a value" in proc.stderr)
    assert fake.commands() == []


def test_off_by_default_passes_zero_and_reads_no_policy(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake)
    assert parameters(fake) == ("0", "false")
    assert "Immutable exports: off (default)" in proc.stderr
    assert SHOW not in fake.commands() and policy(fake) is None
    second = deployed(fake)
    assert SHOW not in fake.commands(), "never on, nothing to look at"
    assert "Immutable exports: off (the last deployment)" in second.stderr


def test_longer_than_the_retention_is_refused_before_anything_is_created(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deploy(fake, "--immutability-days", "365")
    assert proc.returncode == 1
    [line] = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert "--immutability-days 365 exceeds exportRetentionDays 90 (infra/main.bicepparam)" in line
    assert "Raise exportRetentionDays to at least 365, or pass --immutability-days 90 or less." in line
    assert not {"group create", "ad app create", "deployment group create"} & set(fake.commands())


def test_as_long_as_the_retention_is_allowed(tmp_path):
    fake = FakeAzure(tmp_path)
    deployed(fake, "--immutability-days", "90")
    assert policy(fake) == {"state": "Unlocked", "days": 90}


def test_on_deploys_an_unlocked_policy_and_names_the_state_container(tmp_path):
    fake = FakeAzure(tmp_path)
    proc = deployed(fake, "--immutability-days", "30")
    assert parameters(fake) == ("30", "false")
    assert policy(fake) == {"state": "Unlocked", "days": 30}
    assert "Immutable exports: a 30-day retention policy" in proc.stderr and "(--immutability-days)" in proc.stderr
    assert f"users/latest.json and the app's state in {NAMES['exportStorage']}/graph-exports-state" in proc.stderr
    assert "users/latest.json and the state in 'graph-exports-state'" in proc.stderr  # the summary


def test_a_plain_rerun_keeps_the_days_and_looks_at_the_policy(tmp_path):
    fake = immutable(tmp_path)
    proc = deployed(fake)
    assert "Immutable exports: a 30-day retention policy" in proc.stderr and "(the last deployment)" in proc.stderr
    assert parameters(fake) == ("30", "false")
    show = fake.call(SHOW)
    assert opt(show, "--account-name") == NAMES["exportStorage"] and opt(show, "--container-name") == "graph-exports"
    assert opt(show, "--resource-group") == RG


def test_a_locked_policy_is_left_to_the_deployment_untouched(tmp_path):
    fake = immutable(tmp_path)
    fake.lock_policy()
    deployed(fake)
    assert parameters(fake) == ("30", "true"), "the template then leaves the policy out"
    assert policy(fake) == {"state": "Locked", "days": 30}
    assert EXTEND not in fake.commands()


def test_the_fake_refuses_to_rewrite_a_locked_policy(tmp_path):
    """Without exportImmutabilityLocked the template would PUT the locked policy, which ARM refuses."""
    fake = immutable(tmp_path)
    fake.lock_policy()
    proc = subprocess.run(["az", "deployment", "group", "create", "-g", RG, "-n", "graph-export"],
                          capture_output=True, text=True, check=False,
                          env=fake.env(GRAPH_EXPORT_CLIENT_ID="22222222-2222-2222-2222-222222222222",
                                       GRAPH_EXPORT_IMMUTABILITY_DAYS="30"))
    assert proc.returncode == 1 and "Locked" in proc.stderr


def test_a_locked_policy_grows_through_extend_after_the_deployment(tmp_path):
    fake = immutable(tmp_path)
    fake.lock_policy()
    etag = fake.state["immutability_policy"]["etag"]
    proc = deployed(fake, "--immutability-days", "60")
    assert parameters(fake) == ("60", "true")
    extend = fake.call(EXTEND)
    assert opt(extend, "--period") == "60" and opt(extend, "--if-match") == etag
    assert opt(extend, "--account-name") == NAMES["exportStorage"] and opt(extend, "--container-name") == "graph-exports"
    commands = fake.commands()
    assert commands.index("deployment group create") < commands.index(EXTEND)
    assert policy(fake) == {"state": "Locked", "days": 60}
    assert "locked immutability policy extended from 30 to 60 days" in proc.stderr


@pytest.mark.parametrize("days", ["10", "0"])
def test_a_locked_policy_is_never_shortened_or_removed(tmp_path, days):
    fake = immutable(tmp_path)
    fake.lock_policy()
    proc = deploy(fake, "--immutability-days", days)
    assert proc.returncode == 1
    assert ("is locked at 30 days: it can be extended, never shortened or removed. "
            "Pass --immutability-days 30 or more.") in proc.stderr
    assert "deployment group create" not in fake.commands()
    assert policy(fake) == {"state": "Locked", "days": 30}


def test_an_unlocked_policy_can_be_shortened(tmp_path):
    fake = immutable(tmp_path)
    deployed(fake, "--immutability-days", "10")
    assert parameters(fake) == ("10", "false") and policy(fake) == {"state": "Unlocked", "days": 10}


def test_turning_off_needs_the_unlocked_policy_deleted_first(tmp_path):
    fake = immutable(tmp_path)
    refused = deploy(fake, "--immutability-days", "0")
    assert refused.returncode == 1 and "deployment group create" not in fake.commands()
    assert "still has an unlocked 30-day immutability policy" in refused.stderr
    # The message carries the one command to run; it works as printed.
    [command] = re.findall(r"(az storage container immutability-policy delete .*)$", refused.stderr, re.M)
    subprocess.run(["bash", "-c", command], check=True, capture_output=True, text=True, env=fake.env())
    assert policy(fake) is None
    proc = deployed(fake, "--immutability-days", "0")
    assert parameters(fake) == ("0", "false")
    assert "immutable exports off again: the app keeps users/latest.json and its state in graph-exports" in proc.stderr


def test_what_if_says_it_would_extend_and_changes_nothing(tmp_path):
    fake = immutable(tmp_path)
    fake.lock_policy()
    before = fake.state
    proc = fake.run("-g", RG, "--what-if", "--immutability-days", "45")
    assert proc.returncode == 0, proc.stderr
    env = fake.call("deployment group what-if")["env"]
    assert (env["GRAPH_EXPORT_IMMUTABILITY_DAYS"], env["GRAPH_EXPORT_IMMUTABILITY_LOCKED"]) == ("45", "true")
    assert "then: extend the locked immutability policy from 30 to 45 days" in proc.stderr
    assert EXTEND not in fake.commands()
    assert fake.state["immutability_policy"] == before["immutability_policy"]


def test_a_deployment_from_before_the_setting_counts_as_off(tmp_path):
    """An older deployment has no exportImmutabilityDays output: az prints None, which is no value."""
    fake = FakeAzure(tmp_path, deployment_credential="secret", missing_outputs=["exportImmutabilityDays"])
    proc = deployed(fake)
    assert parameters(fake) == ("0", "false") and "Immutable exports: off (default)" in proc.stderr
