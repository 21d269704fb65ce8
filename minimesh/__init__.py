"""minimesh: a small, real sidecar service mesh that trainees build stage by stage."""

__version__ = "0.1.0"
