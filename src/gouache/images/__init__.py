"""Images members send in: image prompts, style and character references, blends, describes.

* `gouache.images.check` — is it a real image (PNG, JPEG, WebP, GIF's first
  frame), within the byte and pixel caps; its metadata stripped.
* `gouache.images.fetch` — downloading one safely: https only, never to a
  loopback, private, link-local or metadata address (resolved first, each
  redirect checked again), with a timeout and a byte cap; Discord's own
  attachment host is exempt from the address rule.
* `gouache.images.refs` — image URLs written in a prompt (image prompts first,
  ``--sref URL``, ``--cref URL``), taken out of the text.
* `gouache.images.inputs` — the whole intake: fetch, check, store in the image
  store (content-addressed), and load again for a worker.
"""

from gouache.images.check import CheckedImage, ImageLimits, ImageRejected, check_image

__all__ = ["CheckedImage", "ImageLimits", "ImageRejected", "check_image"]
