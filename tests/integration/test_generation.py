"""Processes follow the registry's generation in Redis, even after Redis lost it."""

from __future__ import annotations

from pathlib import Path

import redis

from shared.registry import GENERATION_KEY, GenerationWatch, Registry, bump_generation
from shared.storage import LocalStorage


def test_a_change_after_redis_lost_the_generation_is_still_seen(
    clean_redis: redis.Redis, tmp_path: Path
) -> None:
    """Bump, look, lose the key (a flush), bump again before the next look: both changes are seen."""
    watch = GenerationWatch(clean_redis, Registry(LocalStorage(tmp_path)), interval_s=0)
    watch.check()
    bump_generation(clean_redis)
    assert watch.check()
    assert not watch.check()
    # Redis loses the key and the registry changes again before this process looks: a counter
    # would be back at the value it saw last.
    clean_redis.delete(GENERATION_KEY)
    bump_generation(clean_redis)
    assert watch.check()
