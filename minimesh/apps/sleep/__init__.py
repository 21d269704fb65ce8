"""The `sleep` client pod's main process: do nothing until told to stop (trainees `exec curl` from it)."""
