"""The networks (NiN, GoogLeNet, GoogLeNet-CIFAR), their layers and FLOP accounting.

``inception.models`` is the registry: ``get_model(name, **options)`` builds a
registered network and ``init_variables`` initialises it. Submodules:
``layers`` (the building blocks), ``networks`` (the registered nets),
``flops`` (analytic and XLA FLOP counts), ``budget`` (widths at equal MACs).
Models know nothing of data, configs or files.
"""
from inception.models.networks import (MODELS, TABLE1, AuxHead, GoogLeNet,
                                       GoogLeNetCIFAR, NiN, ReducedConv,
                                       Registered, get_model, init_variables,
                                       model_options)

__all__ = ['MODELS', 'TABLE1', 'AuxHead', 'GoogLeNet', 'GoogLeNetCIFAR', 'NiN',
           'ReducedConv', 'Registered', 'get_model', 'init_variables',
           'model_options']
