"""presets: moved to capq.presets (the catalogue is shared data); this re-export keeps old imports working."""
from capq.presets import (  # noqa: F401
                          POSTPROCESSORS,
                          PRESETS,
                          UnknownPreset,
                          apply_postprocess,
                          config_hash,
                          get_preset,
                          preset_names,
)
