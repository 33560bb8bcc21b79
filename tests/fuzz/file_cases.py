"""File fuzz cases: ``fastdecode.load`` (or ``load_codebook_model`` for a fish-speech folder,
``"loader": "codebook"``) on a mutated checkpoint must load or raise a
ValueError / FileNotFoundError whose message names the file; anything else (another
exception type, a message without the path, a crash or a hang) is a finding."""
from __future__ import annotations

import traceback
from typing import Dict

import fastdecode


def run_file_case(case: Dict) -> Dict[str, str]:
    path = case["file"]
    try:
        if case.get("loader") == "codebook":  # a fish-speech folder
            from fastdecode.dual_ar_folder import load_codebook_model
            load_codebook_model(path)
        else:
            fastdecode.load(path, quantized=case.get("quantized", False))
    except (ValueError, FileNotFoundError) as e:
        if path not in str(e):
            return {"outcome": "bad", "detail": f"the error does not name the file: {e!r}"}
        return {"outcome": "error", "detail": f"{type(e).__name__}: {str(e)[:300]}"}
    except Exception as e:  # judged: not a clear error
        return {"outcome": "bad", "detail": f"unclear {type(e).__name__}: "
                f"{traceback.format_exc()[-1500:]}"}
    return {"outcome": "ok", "detail": ""}
