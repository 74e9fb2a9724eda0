"""How records reach the tracking server: runs, the background logger, the journal, failover to an offline store,
`mlflow-dl sync`, and what a CLI command does when the server does not answer."""
