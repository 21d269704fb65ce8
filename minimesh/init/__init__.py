"""Stage 2: the init container. `rules` builds the nat rules (pure), `__main__` applies them, `diag` shows
where traffic lands."""
