"""The import path Azure ML's entry scripts use, made real by this provider.

Azure's docs tell entry scripts to write ``from azureml_user.parallel_run import EntryScript``, and
Azure provides that module only inside its own compute. Installing airflow-provider-parallelrun
installs this package, so such a script runs here without an edit.
"""
