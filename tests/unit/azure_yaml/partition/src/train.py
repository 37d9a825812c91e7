"""A partition_keys entry script: one model per key group (a stand-in that counts rows)."""


def run(mini_batch, mini_batch_context):
    return [f"{mini_batch_context.partition_key_value}: {len(mini_batch)}"]
