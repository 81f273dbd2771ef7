"""Request building: each sample's request built once (images encoded once per run) and shared by every
endpoint, so every endpoint is sent the same bytes apart from `model`; the multi-image treatments."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from vlmparity.store import SampleRecord
from vlmparity.tasks.base import ImageData, ImagePart, Part, Prompt, Sample, Task, build_request

if TYPE_CHECKING:
    from vlmparity.data.images import ImageEncoder


def merge_prompt(prompt: Prompt) -> Prompt:
    """The prompt for a sample whose images were tiled into one: the first image part stays (as image 0),
    the others go; every text part stays where it was."""
    parts: list[Part] = []
    seen_image = False
    for part in prompt.parts:
        if isinstance(part, ImagePart):
            if seen_image:
                continue
            seen_image = True
            parts.append(ImagePart(0))
        else:
            parts.append(part)
    return replace(prompt, parts=tuple(parts))


@dataclass(frozen=True)
class Built:
    """One sample's request, serialised once (without `model`) and shared by every endpoint."""

    index: int
    sample: Sample
    treatment: str  # full | merged | skipped
    payload: bytes | None  # None when skipped
    request_hash: str
    image_count: int

    def record(self) -> SampleRecord:
        return SampleRecord(
            task=self.sample.task,
            sample_id=self.sample.id,
            doc_id=self.sample.doc_id,
            request_hash=self.request_hash,
            image_count=self.image_count,
            treatment=self.treatment,
        )


def treatment_for(n_images: int, policy: str, limit: int | None) -> str:
    """How a sample with `n_images` is sent under `--multi-image` given the smallest known image limit."""
    if policy == "error" or limit is None or n_images <= limit:
        return "full"
    if policy == "skip":
        return "skipped"
    return "merged" if limit >= 1 and n_images > 1 else "full"


def build_one(
    index: int, sample: Sample, task: Task, gen: Any, encoder: ImageEncoder, policy: str, limit: int | None
) -> Built:
    """Build a sample's request under the multi-image policy (runs on a worker thread)."""
    if sample.omitted_images:  # a programming error: such plans are for scoring (prepare_task(images=False))
        raise ValueError(f"sample {sample.id!r} was loaded without its images and cannot be sent")
    prompt = task.prompt(sample)
    n_images = sum(1 for p in prompt.parts if isinstance(p, ImagePart))
    treatment = treatment_for(n_images, policy, limit)
    if treatment == "skipped":
        return Built(index, sample, treatment, None, "", n_images)
    if treatment == "merged" and len(sample.images) > 1:
        from vlmparity.data.images import tile_images

        order = [p.index for p in prompt.parts if isinstance(p, ImagePart)]
        tiled: ImageData = tile_images(
            [sample.images[i] for i in order], sample_id=sample.id, notices=encoder.notices
        )
        sample = replace(sample, images=(tiled,))
        prompt = merge_prompt(prompt)
    request = build_request(sample, prompt, gen, lambda image: encoder.data_url(image, sample_id=sample.id))
    return Built(
        index, sample, treatment, orjson.dumps(request.body), request.request_hash, request.image_count
    )


def _mark_retrieved(fut: asyncio.Future[Any]) -> None:
    """A failed build nobody awaits any more (its endpoint stopped first) is not worth asyncio's "Future
    exception was never retrieved" traceback; whoever awaits it still gets the exception."""
    if not fut.cancelled():
        fut.exception()


class RequestBook:
    """Builds each sample's request once, a few samples ahead, on worker threads, for every endpoint.

    Every endpoint that needs sample i is handed the very same `Built` (same bytes), so the requests
    are identical by construction. A body is dropped once every endpoint that wanted it took it. When
    one endpoint runs far ahead of another, the bodies waiting for the slow one are held up to
    `max_entries` bodies and `max_bytes` bytes (bodies built ahead and not yet taken by anyone count
    towards both but are dropped only beyond `max_entries`); beyond that the ones the slow one needs last
    (the highest indices already taken by someone) are dropped first, and rebuilt when it gets there
    (building is deterministic: the same bytes). Without the byte cap, 256 MMMU bodies of up to 20 MB
    each could be held.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tasks: Mapping[str, Task],
        build: Callable[[int, Sample, Task], Built],
        *,
        workers: int,
        prefetch: Callable[[Sequence[Sample]], object] | None = None,
        release: Callable[[Sequence[str]], object] | None = None,
        max_entries: int = 256,
        max_bytes: int = 128 << 20,
    ) -> None:
        self._samples = samples
        self._tasks = tasks
        self._build = build
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="vlmparity-build")
        # Image encoding runs ahead of the builds on the encoder's own pool: the two questions of an MME
        # image sit side by side, so parallel builds alone would wait on the same image one at a time.
        self._prefetch = prefetch
        self._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix="vlmparity-prefetch")
        self._prefetching = 0
        self._entries: dict[int, asyncio.Future[Built]] = {}
        self._refs: dict[int, int] = {}
        # An encoded image is needed until every endpoint took every sample that shows it; then its data
        # URL is released (a pass that sends it again encodes it again). Keeps the encoder's cache small.
        self._release = release
        self._image_refs: dict[str, int] = {}
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._sizes: dict[int, int] = {}  # payload bytes of built entries still held
        self._held_bytes = 0
        self._taken: set[int] = set()  # indices some endpoint already took (others may still want them)
        self.builds = 0
        self.peak_bytes = 0  # most payload bytes held at once (diagnostics, tests)

    def want(self, indices: Sequence[int]) -> None:
        """One more endpoint will take each of `indices`."""
        for i in indices:
            self._refs[i] = self._refs.get(i, 0) + 1
            for image in self._samples[i].images:
                self._image_refs[image.key] = self._image_refs.get(image.key, 0) + 1

    def _start(self, index: int) -> asyncio.Future[Built]:
        fut = self._entries.get(index)
        if fut is None:
            sample = self._samples[index]
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._pool, self._build, index, sample, self._tasks[sample.task])
            fut.add_done_callback(_mark_retrieved)
            fut.add_done_callback(functools.partial(self._built, index))
            self._entries[index] = fut
            self.builds += 1
            if len(self._entries) > self._max_entries:
                self._evict()
        return fut

    def _built(self, index: int, fut: asyncio.Future[Built]) -> None:
        """Count a finished build's bytes while the book holds it; enforce the caps."""
        if self._entries.get(index) is not fut or fut.cancelled() or fut.exception() is not None:
            return
        size = len(fut.result().payload or b"")
        self._sizes[index] = size
        self._held_bytes += size
        self.peak_bytes = max(self.peak_bytes, self._held_bytes)
        if self._held_bytes > self._max_bytes:
            self._evict()

    def _drop(self, index: int) -> None:
        self._entries.pop(index, None)
        self._held_bytes -= self._sizes.pop(index, 0)

    def _evict(self) -> None:
        """Enforce the caps. Bodies some endpoint already took wait only for slower ones: they go first,
        the highest index first (a lagging endpoint needs it last). Bodies nobody took yet are about to
        be sent: they go only beyond the entry cap (dropping them for bytes would rebuild them at once)."""
        done = [i for i, f in self._entries.items() if f.done()]
        for i in sorted((i for i in done if i in self._taken), reverse=True):
            if len(self._entries) <= self._max_entries and self._held_bytes <= self._max_bytes:
                return
            self._drop(i)
        for i in sorted(i for i in done if i not in self._taken):
            if len(self._entries) <= self._max_entries:
                return
            self._drop(i)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Encode the images of `indices` in the background (at most two batches queued)."""
        if self._prefetch is None or not indices or self._prefetching >= 2:
            return
        self._prefetching += 1
        batch = [self._samples[i] for i in indices]
        fut = asyncio.get_running_loop().run_in_executor(self._prefetch_pool, self._prefetch_wanted, batch)
        fut.add_done_callback(self._prefetched)

    def _prefetch_wanted(self, batch: Sequence[Sample]) -> object:
        """Prefetch thread: encode only images still to be taken. A queued batch often starts after the
        builds got there first and released their images: encoding those again would be wasted work, and
        their URLs would stay until the size cap evicts them."""
        assert self._prefetch is not None
        refs = self._image_refs
        return self._prefetch([s for s in batch if any(refs.get(im.key) for im in s.images)])

    def _prefetched(self, fut: asyncio.Future[object]) -> None:
        self._prefetching -= 1
        if not fut.cancelled():
            fut.exception()  # a bad image is reported (naming its sample) by the build that needs it

    async def take(self, index: int, ahead: Sequence[int] = (), prefetch: Sequence[int] = ()) -> Built:
        """The request of sample `index`, starting the builds of `ahead` and the image encoding of
        `prefetch` meanwhile."""
        self.prefetch(prefetch)
        fut = self._start(index)
        for j in ahead:
            self._start(j)
        built = await fut
        left = self._refs.get(index, 1) - 1
        self._refs[index] = left
        if left <= 0:
            self._drop(index)
            self._taken.discard(index)
        else:
            self._taken.add(index)
        self._taken_images(index)
        return built

    def _taken_images(self, index: int) -> None:
        done = []
        for image in self._samples[index].images:
            n = self._image_refs.get(image.key, 0) - 1
            if n > 0:
                self._image_refs[image.key] = n
            elif self._image_refs.pop(image.key, None) is not None:
                done.append(image.key)
        if done and self._release is not None:
            self._release(done)

    def forget(self, index: int) -> None:
        """Drop a cached build (its treatment changed)."""
        self._drop(index)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._prefetch_pool.shutdown(wait=True, cancel_futures=True)
