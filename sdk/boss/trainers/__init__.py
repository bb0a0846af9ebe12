"""Built-in trainers: `digits` (offline, CPU, seconds) and `cifar` (ResNet, for GPUs)."""
