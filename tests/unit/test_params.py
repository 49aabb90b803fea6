import pytest

from camfx.engine.params import EFFECTS, Params, ParamsError, hex_to_rgb

pytestmark = pytest.mark.unit


def test_defaults_are_valid_and_effects_listed():
    assert Params().effect in EFFECTS
    assert set(EFFECTS) == {"none", "blur", "replace", "remove", "toon", "diffusion"}


def test_partial_update_keeps_other_fields():
    p = Params().updated({"effect": "remove", "key_color": "#0000FF"})
    assert (p.effect, p.key_color, p.blur_strength) == ("remove", "#0000ff", Params().blur_strength)


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"effect": "sepia"}, "effect"),
        ({"blur_strength": 500}, "blur_strength"),
        ({"mask_threshold": 1.5}, "mask_threshold"),
        ({"key_color": "green"}, "key_color"),
        ({"background_image": "../etc/passwd"}, "background_image"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_bad_values_name_the_field(patch, field):
    with pytest.raises(ParamsError) as err:
        Params().updated(patch)
    assert err.value.errors[0]["field"] == field


def test_non_object_is_rejected():
    with pytest.raises(ParamsError):
        Params().updated(["effect", "blur"])


def test_hex_to_rgb():
    assert hex_to_rgb("#00ff80") == (0, 255, 128)
