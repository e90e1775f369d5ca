"""Fine-tuning of foundation models: classification heads, LoRA (peft) and full fine-tuning.

``cellfoundry.tuning.finetune(reference, label_key, model=..., method="head"|"lora"|"full", ...)``
adapts an encoder to a labelled reference and writes a ``finetuned`` artifact; see
:mod:`cellfoundry.tuning.finetune`.
"""

from cellfoundry.tuning.finetune import finetune

__all__ = ["finetune"]
