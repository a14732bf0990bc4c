import pytest
from support import Children


@pytest.fixture
def children():
    kids = Children()
    yield kids
    kids.kill_all()
