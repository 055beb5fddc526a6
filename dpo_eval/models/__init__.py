"""Find, identify and load the causal language models that dpo-eval scores.

A model path is a local path, an alias or a Hub id (``org/name`` or ``org/name@revision``, when no
local path has that name: ``dpo_eval.models.hub`` downloads its safetensors, config, tokenizer and
adapter files into the huggingface_hub cache). Its folder is one of four kinds:

- ``pretrained``: a ``save_pretrained`` folder (``config.json`` and ``*.safetensors``, sharded or not);
- ``checkpoint``: a Trainer/TRL ``checkpoint-N`` folder with the same content; its tokenizer may live
  in the parent (the run's output folder);
- ``peft``: a folder with ``adapter_config.json``; the adapter is merged into its base model;
- ``gguf``: a ``.gguf`` file, or the alias ``smollm2``; it is de-quantized once into
  ``<cache_dir>/gguf/<digest>/`` and later loads read that folder.

Only Hub ids are downloaded, and never their pickled weights. Pickled ``.bin`` weights can run code when
loaded, so they are refused unless the caller passes ``allow_pickle=True``; a model's own Python code
runs only with ``trust_remote_code=True``. Every function that reads a model takes both flags.

Modules: ``locate`` (paths, checkpoint-N, adapters), ``hub`` (Hub ids), ``gguf`` (conversion), ``identify``
(fingerprints, ``ModelIdentity``), ``load`` (``load_model``, devices, dtypes), ``tokenizer``
(``load_tokenizer``, ``check_same_vocabulary``). The names below are the public interface.
"""

from dpo_eval.fingerprint import fingerprint_module
from dpo_eval.models.identify import ModelIdentity, identify_model
from dpo_eval.models.load import LoadedModel, load_model, resolve_device, resolve_dtype
from dpo_eval.models.tokenizer import check_same_vocabulary, load_tokenizer

__all__ = [
    "LoadedModel",
    "ModelIdentity",
    "check_same_vocabulary",
    "fingerprint_module",
    "identify_model",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
]
