"""Shape of MachineLearningNotebooks' parallel-run ``Code/total_file_size.py`` (partition per folder).

As there: ``run(mini_batch, mini_batch_context)`` on a FileDataset whose partition format names
``user`` and ``genres``; it reads ``partition_key_value`` and ``dataset`` from the context and
returns one comma-separated line per file.
"""

import os


def init():
    print("Init")


def run(mini_batch, mini_batch_context):
    keys = mini_batch_context.partition_key_value
    print(f"partition_key_value = {keys}, dataset = {mini_batch_context.dataset}")
    sizes = [os.path.getsize(path) for path in mini_batch]
    total = sum(sizes)
    return [
        ",".join(
            str(x) for x in (os.path.basename(path), size, size / total, keys["user"], keys["genres"], total)
        )
        for path, size in zip(mini_batch, sizes, strict=True)
    ]
