"""Test helpers shipped with register-runner (a fake GitLab server)."""
