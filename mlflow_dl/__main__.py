from mlflow_dl.cli import program

program()
