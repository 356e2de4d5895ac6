"""register_runner.gitlab.sync: register-runner's Python API as an Ansible module."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sync
short_description: Keep a host's GitLab runners registered and its config.toml correct
description:
  - Runs register-runner on the target host, through its Python API (C(register_runner.sync),
    or C(register_runner.plan) in check mode), for one prefix and instance. It converges
    GitLab and C(<prefix>/config.<instance>.toml) with the template and executor files
    under the prefix, which the play puts there first (M(ansible.builtin.template),
    M(ansible.builtin.copy)).
  - C(changed) is register-runner's own verdict (a runner created, updated or deleted in
    GitLab, or the config rewritten), so a handler that restarts or reloads gitlab-runner
    runs only when something changed.
  - Exit status 1 (GitLab refused something a person must fix, such as a rejected access
    token) and 2 (bad input, such as a malformed executor file, named in C(msg)) fail the
    task.
  - When GitLab could not be reached or was failing, register-runner keeps the last good
    config. The task is then not failed (gitlab-runner goes on with the config it has) but
    returns C(changed=false), C(healthy=false) and a warning, never a silent "ok". The
    same holds for exit status 3 (nothing good to keep yet, the lock busy, any GitLab
    failure with O(strict)); C(exit_status) tells them apart for a C(failed_when).
  - Tokens are never returned or shown, in the result or in the diff; they are masked
    (C(glrt-…abcd)).
version_added: 0.1.0
author:
  - The register-runner authors
requirements:
  - register-runner on the target host, installed with pip (importable by the Python
    that Ansible runs there) or as the zipapp (see O(zipapp)).
  - Python 3.9 or newer on the target.
options:
  prefix:
    description:
      - The folder holding the template, the executor folder and the generated config.
    type: path
    default: /etc/gitlab-runner
  instance:
    description:
      - The instance name (C(config.template.<instance>.toml), C(<instance>/)).
    type: str
    default: main
  deadline:
    description:
      - Seconds the whole run may take, retries and rate-limit waits included; past it,
        the run ends as "GitLab failing" with the last good config kept.
    type: float
    default: 30.0
  fresh_deadline:
    description:
      - The deadline instead of O(deadline) when there is no config to keep yet (a fresh
        host, whose runners cannot start without GitLab), to wait out a long
        C(Retry-After). Default O(deadline).
    type: float
  timeout:
    description:
      - Seconds one API call may take.
    type: float
    default: 10.0
  jobs:
    description:
      - API calls at once. Default one per runner, up to 64.
    type: int
  force:
    description:
      - Override the guards - an empty or missing executor folder while runners exist
        (which deletes them), a host held by the mass-invalid guard, O(max_deletions).
    type: bool
    default: false
  strict:
    description:
      - Any GitLab failure is exit status 3, also when the last good config was kept.
    type: bool
    default: false
  insecure_permissions:
    description:
      - Accept a prefix, token file or C(tls_ca_file) that group or others may write,
        and secret files they may read.
    type: bool
    default: false
  refresh:
    description:
      - Read each runner's attributes from GitLab and correct changes made there (by
        default they are compared with what register-runner last applied).
    type: bool
    default: false
  prune:
    description:
      - Delete this host's runners whose executor file is gone. V(false) keeps them.
    type: bool
    default: true
  max_deletions:
    description:
      - Refuse to delete more runners in one run (bad input, exit status 2). Default
        half of them, at least 1.
    type: int
  capture_tags:
    description:
      - A C(.py) file, or a module importable from C(PYTHONPATH), whose C(capture_tags)
        function adds tags (as gitlab-runner-auth's C(--capture-tags)).
    type: str
  tag_schema:
    description:
      - A JSON schema that validates what O(capture_tags) returns.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for another run on the same prefix (the systemd pre-step or
        timer) to finish; past it the task returns exit status 3, unhealthy.
    type: float
    default: 60.0
  zipapp:
    description:
      - Where the register-runner zipapp is on the target. Used only when the package
        cannot be imported (it was not installed with pip). A zipapp is a zip of the
        package and its dependencies, importable once on C(sys.path).
    type: path
    default: /usr/local/bin/register-runner
attributes:
  check_mode:
    description: Runs C(register_runner.plan) - GitLab is asked, nothing is changed.
    support: full
  diff_mode:
    description:
      - The runners' attribute changes in GitLab (such as C(tag_list)), the runners
        created or deleted, and a unified diff of the config, tokens masked.
      - In check mode the config diff is left out when new tokens are pending (they are
        known only once GitLab issues them).
    support: full
notes:
  - Secrets (access tokens) come from the template, C(*_file) keys, the environment or
    C($CREDENTIALS_DIRECTORY), as for the command line; set environment variables with
    the task's C(environment) keyword.
  - The shipped systemd units run register-runner too, under the same lock; the task
    waits for them (O(lock_timeout)).
"""

EXAMPLES = r"""
- name: Executor files
  ansible.builtin.template:
    src: "{{ item }}.toml.j2"
    dest: "/etc/gitlab-runner/main/{{ item }}.toml"
    mode: "0600"
  loop: [shell, docker]

- name: Register the runners and write config.main.toml
  register_runner.gitlab.sync:
    prefix: /etc/gitlab-runner
    instance: main
  register: runners
  notify: Restart gitlab-runner

- name: Say so when GitLab could not be asked
  ansible.builtin.debug:
    msg: "GitLab failing on {{ inventory_hostname }}: the last good config was kept"
  when: not runners.healthy

# handlers: gitlab-runner reads a rewritten config by itself; a restart applies at once
# what it reads only at start (listen_address, session_server). Not when only GitLab
# changed (tags, say): the config is the same.
- name: Restart gitlab-runner
  ansible.builtin.service:
    name: gitlab-runner
    state: restarted
  when: runners.config_written
"""

RETURN = r"""
changed:
  description:
    - Something was changed in GitLab or on disk; in check mode, changes are pending.
  returned: always
  type: bool
healthy:
  description:
    - The host's runners can take jobs - register-runner exited 0 and every runner's
      token was verified valid by GitLab (what C(register-runner status) exits 0 for).
    - V(false) when GitLab could not be asked (the last good config was kept), a
      runner is invalid, held, or not registered yet (in check mode, a runner that
      would be created).
  returned: always
  type: bool
  sample: true
exit_status:
  description:
    - What the command line would exit with - 0 done (also when GitLab failed and the
      last good config was kept), 1 a person must act, 2 bad input, 3 try again later.
  returned: always
  type: int
  sample: 0
actions:
  description: One row per action, as C(register-runner --json) prints them.
  returned: when register-runner ran
  type: list
  elements: dict
  sample:
    - action: update
      runner: shell
      id: 12
      result: done
      reason: registration attributes changed
      changes:
        - attribute: tag_list
          old: [linux]
          new: [linux, shell]
warnings:
  description: The run's warnings, shown as Ansible warnings.
  returned: when there are any
  type: list
  elements: str
config:
  description: The config gitlab-runner reads.
  returned: when register-runner ran
  type: str
  sample: /etc/gitlab-runner/config.main.toml
config_written:
  description: The config file was rewritten (never in check mode).
  returned: when register-runner ran
  type: bool
system_id:
  description: The host's system ID, as GitLab sees it.
  returned: when register-runner ran
  type: str
  sample: s_0123456789ab
msg:
  description: The one line that says what went wrong, naming the file for bad input.
  returned: on failure
  type: str
"""

import json  # noqa: E402 (Ansible reads the blocks above without running the module)
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

# The options that become register_runner.model.Options (lock_timeout is sync's own).
RUN_OPTIONS = (
    "deadline",
    "fresh_deadline",
    "timeout",
    "jobs",
    "force",
    "strict",
    "insecure_permissions",
    "refresh",
    "prune",
    "max_deletions",
    "capture_tags",
    "tag_schema",
)
# The bounds the command line's parser puts on the same options.
AT_LEAST = dict(deadline=0, fresh_deadline=0, timeout=0, lock_timeout=0, jobs=1, max_deletions=0)
# Actions after which a runner has no token GitLab accepts yet (only in check mode).
NEEDS_TOKEN = ("create", "recreate")

ARGUMENT_SPEC = dict(
    prefix=dict(type="path", default="/etc/gitlab-runner"),
    instance=dict(type="str", default="main"),
    deadline=dict(type="float", default=30.0),
    fresh_deadline=dict(type="float"),
    timeout=dict(type="float", default=10.0),
    jobs=dict(type="int"),
    force=dict(type="bool", default=False),
    strict=dict(type="bool", default=False),
    insecure_permissions=dict(type="bool", default=False),
    refresh=dict(type="bool", default=False),
    prune=dict(type="bool", default=True),
    max_deletions=dict(type="int"),
    capture_tags=dict(type="str"),
    tag_schema=dict(type="path"),
    lock_timeout=dict(type="float", default=60.0),
    zipapp=dict(type="path", default="/usr/local/bin/register-runner"),
)


def import_register_runner(zipapp):
    """The package as pip installed it, else from the zipapp (a zip whose root is what goes
    on sys.path; zipimport skips the shebang line in front of it). None when neither."""
    try:
        import register_runner
    except ImportError:
        if not os.path.isfile(zipapp):
            return None
        sys.path.insert(0, zipapp)
        try:
            import register_runner
        except ImportError:
            sys.path.remove(zipapp)
            return None
    return register_runner


def read_config(path):
    """The config's text before the run, for the diff; empty when there is none. Only a
    regular file is opened (a FIFO would block; register-runner names it as bad input)."""
    if not path.is_file():
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def attribute_diffs(result):
    """One Ansible diff per runner the run changes in GitLab: its attributes before and
    after (such as tag_list), or that it is created or deleted."""
    diffs = []
    for action in result.actions:
        if action.runner == "(config)" or action.kind in ("keep", "wait"):
            continue
        header = f"runner {action.runner}" + ("" if action.id is None else f" (id {action.id})")
        if action.changes:
            before = "".join(f"{name}: {json.dumps(old)}\n" for name, old, _ in action.changes)
            after = "".join(f"{name}: {json.dumps(new)}\n" for name, _, new in action.changes)
        elif action.kind == "delete":
            before, after = "registered\n", "deleted\n"
        elif action.kind == "create":
            before, after = "", "registered\n"
        else:  # recreate, rotate: a new token (or runner), the same attributes
            before, after = "", f"{action.kind}: {action.reason}\n"
        diffs.append(dict(before_header=header, after_header=header, before=before, after=after))
    return diffs


class Errors(logging.Handler):
    """The error lines the package logs (``event=refused …``): what the command line
    prints when a run exits 1. Being a handler, it also keeps the package's log off the
    module's stderr (logging's last resort)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.lines = []

    def emit(self, record):
        line = record.getMessage()
        prefix = "event=refused "
        self.lines.append(line[len(prefix) :] if line.startswith(prefix) else line)


def refusal(result, errors):
    """The one line that says why a run exited 1 or 2."""
    lines = errors or [
        f"{a.kind} {a.runner}: {a.error}"
        for a in result.actions
        if a.error and a.result not in ("waiting", "kept")
    ]
    lines = lines or list(result.warnings[-1:])
    return "; ".join(dict.fromkeys(lines)) or f"register-runner exited {result.exit_status}"


def check_mode_healthy(result):
    """plan records no run: healthy when GitLab answered and no runner lacks a valid
    token."""
    return result.exit_status == 0 and not any(a.kind in NEEDS_TOKEN for a in result.actions)


def out_of_bounds(params):
    """The one line naming an option whose value the command line would refuse, or None."""
    for name, least in AT_LEAST.items():
        if params[name] is not None and params[name] < least:
            bound = "must not be negative" if least == 0 else f"must be at least {least}"
            return f"{name}: {bound} (got {params[name]})"
    return None


def run(module, rr, errors):
    params = module.params
    options = {name: params[name] for name in RUN_OPTIONS}
    if options["tag_schema"] is not None:
        options["tag_schema"] = Path(options["tag_schema"])
    prefix, instance = Path(params["prefix"]), params["instance"]
    config_path = prefix / f"config.{instance}.toml"
    before = read_config(config_path) if module._diff and not module.check_mode else None
    if module.check_mode:
        # --strict says what a sync exits with; plan has no such option.
        options.pop("strict")
        result = rr.plan(prefix, instance, **options)
    else:
        result = rr.sync(prefix, instance, lock_timeout=params["lock_timeout"], **options)
    healthy = check_mode_healthy(result) if module.check_mode else result.healthy
    returned = dict(
        changed=bool(result.changed),
        healthy=bool(healthy),
        exit_status=result.exit_status,
        actions=[a.as_row() for a in result.actions],
        warnings=list(result.warnings),
        config=str(result.config),
        config_written=bool(result.config_written),
        system_id=result.system_id,
    )
    if result.exit_status in (1, 2):
        returned["msg"] = refusal(result, errors.lines)
    if module._diff:
        from register_runner import report

        diffs = attribute_diffs(result)
        if module.check_mode:
            config_diff = result.config_diff
        else:
            config_diff = report.config_diff(before, read_config(config_path), config_path.name)
        if config_diff:
            diffs.append(dict(prepared=config_diff))
        returned["diff"] = diffs
    return returned


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    rr = import_register_runner(module.params["zipapp"])
    if rr is None:
        module.fail_json(
            msg=(
                f"register-runner is not installed for {sys.executable} on this host (no "
                f"register_runner package, no zipapp at {module.params['zipapp']}): "
                "install it with pip or set zipapp"
            ),
            changed=False,
            healthy=False,
            exit_status=2,
        )
    from register_runner.secret import scrub

    problem = out_of_bounds(module.params)
    if problem:
        module.fail_json(msg=problem, changed=False, healthy=False, exit_status=2)
    errors = Errors()
    logging.getLogger("register_runner").addHandler(errors)
    try:
        returned = run(module, rr, errors)
    except rr.Error as error:
        # Bad input, or a refusal or busy lock before anything ran: one line, nothing done.
        returned = dict(changed=False, healthy=False, exit_status=error.exit_status)
        key = "msg" if error.exit_status in (1, 2) else "warnings"
        returned[key] = str(error) if key == "msg" else [str(error)]
    except Exception as error:
        # A bug: one line, as the command line says it, and the traceback masked too
        # (Ansible shows it with -vvv).
        module.fail_json(
            msg=scrub(f"internal error: {type(error).__name__}: {error} (please report it)"),
            exception=scrub(traceback.format_exc()),
            changed=False,
            healthy=False,
            exit_status=1,
        )
    # Tokens are masked where register-runner reads them; this is the second line.
    returned = json.loads(scrub(json.dumps(returned, default=str)))
    warnings = returned.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    if "msg" in returned:
        module.fail_json(**returned)
    if not returned["healthy"] and not warnings and not module.check_mode:
        module.warn(
            "not every runner can take jobs (register-runner status says why); "
            "gitlab-runner goes on with the config it has"
        )
    module.exit_json(**returned)


if __name__ == "__main__":
    main()
