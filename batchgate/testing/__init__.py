"""Tests a connector author runs against their own connector, with pytest (test code only:
importing this package imports pytest, which batchgate itself does not need).

    from batchgate.testing import DestinationConformance

    class TestProducts(DestinationConformance):
        @pytest.fixture
        def destination(self):
            return Products(base_url=...)  # a fresh, empty destination
"""

from batchgate.testing.conformance import DestinationConformance, SourceConformance

__all__ = ["DestinationConformance", "SourceConformance"]
