"""Models: what one training step does (``SRModel`` ...); registered in ``MODEL_REGISTRY``."""
import logging

from realsr.registry import MODEL_REGISTRY


def build_model(opt):
    """Build the model named by ``opt['model_type']``."""
    model = MODEL_REGISTRY.get(opt['model_type'])(opt)
    logging.getLogger('realsr').info('Model [%s] is created.', type(model).__name__)
    return model
