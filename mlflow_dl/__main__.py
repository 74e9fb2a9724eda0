from mlflow_dl.cli import main

main()
