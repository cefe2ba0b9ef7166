"""FedPEFT ServerApp: FedAvg over the trainable PEFT tensors only."""
