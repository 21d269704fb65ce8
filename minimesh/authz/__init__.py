"""Stage 7: AuthorizationPolicy. `model` parses and validates, `engine` decides (pure), `normalize` cleans paths."""
