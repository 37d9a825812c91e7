"""The smallest entry script: no init(), no shutdown(); one result per file, the file's text."""


def run(mini_batch):
    results = []
    for path in mini_batch:
        with open(path) as f:
            results.append(f.read().strip())
    return results
