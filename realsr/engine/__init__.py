"""Above the models: the training loop, validation, the tester and inference. Models never import
from here; the low-level run utilities they need live in realsr.runtime."""
