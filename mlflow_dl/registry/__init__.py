"""The model registry: which runs compete (candidates), what a winner must be (model_checks), promotion to the
`champion` alias (promotion), serving it (serving), and the team's tracking server (team_server)."""
