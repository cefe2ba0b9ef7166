"""FedPEFT ClientApp: local PEFT training on one data partition."""
