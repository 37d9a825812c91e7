"""Entry scripts of the same shape as Microsoft's published ParallelRunStep and parallel-job examples.

Each module here is written for this project (no code is copied): it has the imports, the
``init()``/``run()`` signatures, the argument parsing, the model lookup and the return value of
one of Microsoft's examples, named in its docstring, with scikit-learn standing in where the
original needs TensorFlow or PyTorch. ``data.py`` makes their small inputs and models locally;
``tests/airflow/test_azure_examples.py`` runs them through real DAG runs.
"""
