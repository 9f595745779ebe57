"""Text generation: `generate`, `stream` and `chat` over any loaded `LM`, every decoding strategy.

```python
import lmforge
from lmforge.generate import generate, stream, chat
lm = lmforge.load("smollm2")
generate(lm, "The capital of France is", max_new_tokens=8).text
generate(lm, ["a", "bb"], do_sample=True, temperature=0.7, top_p=0.9, seed=0)   # batched
generate(lm, "Hi", num_beams=4, length_penalty=1.2, num_return_sequences=2)     # beam search
generate(lm, "Hi", penalty_alpha=0.6, top_k=4)                                  # contrastive search
generate(lm, "Hi", amateur=small_lm, contrastive_alpha=0.1)                     # contrastive decoding
generate(lm, "Hi", draft=small_lm) / generate(lm, "Hi", prompt_lookup=True)     # speculative
for delta in stream(lm, "Once upon a time"): print(delta.text, end="")
chat(lm, [{"role": "user", "content": "Hello!"}]).text
batcher = ContinuousBatcher(lm, max_batch=8)                                    # continuous batching
request = batcher.add("Hi", max_new_tokens=16); events = batcher.step()
```
Options are the fields of `GenerationConfig` (lmforge.generate.config), validated before any work
starts; the model's own generation defaults (generation_config.json / GGUF metadata) fill the rest.
Which strategy runs follows from the options: `num_beams > 1` → beam search; `penalty_alpha > 0` →
contrastive search; an `amateur` model → contrastive decoding; a `draft` model or `prompt_lookup` →
speculative decoding; otherwise greedy or (`do_sample`) sampling. All of them run the same processor
pipeline and constraints. `generate`, `stream`, `chat` live in `api.py`; `ContinuousBatcher` (sequences
joining and leaving one running batch, each with its own options) in `batching.py`. Every call runs on
the model's one long-lived `Engine` (`LM.engine`), which owns the compiled decode steps.
"""

from lmforge.generate.api import Completion, chat, generate, resolve_config, stream
from lmforge.generate.batching import ContinuousBatcher, Event
from lmforge.generate.engine import Engine
from lmforge.generate.stream import Delta

__all__ = [
    "Completion",
    "ContinuousBatcher",
    "Delta",
    "Engine",
    "Event",
    "chat",
    "generate",
    "resolve_config",
    "stream",
]
