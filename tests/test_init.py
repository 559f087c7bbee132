import pytest

import compressbo


def test_every_public_name_resolves():
    for name in compressbo.__all__:
        assert getattr(compressbo, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        compressbo.nope
