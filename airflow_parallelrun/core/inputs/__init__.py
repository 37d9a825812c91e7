"""The input side: datasets, listing and splitting, mini-batches, reading and staging inputs."""
