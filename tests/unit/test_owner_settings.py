"""Issue 15's settings and pricing: prices by model and device, quotas by tier, each malformed value named."""

import pytest

from capq.settings import SettingsError, load_settings
from producer.usage_report import price_per_hour


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("CAPQ_GPU_HOUR_PRICES", "blip=1.2", "must be MODEL:DEVICE"),
        ("CAPQ_GPU_HOUR_PRICES", "dalle:cuda=1.2", "must be MODEL:DEVICE"),
        ("CAPQ_GPU_HOUR_PRICES", "blip:cuda=cheap", "not a number"),
        ("CAPQ_GPU_HOUR_PRICES", "blip:cuda=-1", "0 or more"),
        ("CAPQ_GPU_HOUR_PRICES", "blip:cuda", "NAME=NUMBER pairs"),
        ("CAPQ_DAILY_IMAGE_QUOTAS", "gold=5", "unknown tier 'gold'"),
        ("CAPQ_DAILY_IMAGE_QUOTAS", "free=many", "not a whole number"),
        ("CAPQ_RETENTION_DAYS", "-3", "greater than or equal to 0"),
    ],
)
def test_malformed_owner_settings_are_named(var, value, needle):
    with pytest.raises(SettingsError) as err:
        load_settings({var: value})
    assert var in str(err.value) and needle in str(err.value)


def test_defaults_are_off_and_the_most_specific_price_wins():
    s = load_settings({})
    assert s.retention_days == 0 and s.daily_image_quotas == {} and s.gpu_hour_prices == {}
    s = load_settings({"CAPQ_GPU_HOUR_PRICES": "blip:cuda=1.5,*:cuda=2,*:*=0.1", "CAPQ_DAILY_IMAGE_QUOTAS": "free=10"})
    assert s.daily_image_quotas == {"free": 10}
    assert price_per_hour(s, "blip", "cuda") == 1.5 and price_per_hour(s, "git", "cuda") == 2.0
    assert price_per_hour(s, "git", "cpu") == 0.1
    assert price_per_hour(load_settings({}), "git", "cpu") is None
