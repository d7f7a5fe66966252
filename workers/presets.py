"""presets: moved to capq.presets (the catalogue is shared data); this re-export keeps old imports working."""
from capq.presets import (POSTPROCESSORS, PRESETS, UnknownPreset, apply_postprocess, config_hash,  # noqa: F401
                          get_preset, preset_names)
