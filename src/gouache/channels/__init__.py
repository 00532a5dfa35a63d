"""Per-channel settings, member preferences, content rules and the model catalog.

Operators steer a channel from Discord (`/settings`), the owner CLI
(`gouache channel show|set`) or the admin API (`/channels`); members set their
own defaults with `/preferences`. Settings live in the store (both backends),
so every process sees a change at once, and apply before quota is reserved
(`gouache.channels.rules.ChannelRules.place`).

Modules: ``settings`` (the values and their validation), ``content`` (adult
words and the content rule), ``catalog`` (the models the pool can run),
``rules`` (putting them together for one request), ``store`` (what a store
must offer), ``errors``, ``graph`` (binding a checkpoint or LoRA into a
ComfyUI workflow).
"""
