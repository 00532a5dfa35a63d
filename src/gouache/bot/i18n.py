"""User-facing text in English and Simplified Chinese, chosen by the member's Discord locale."""

from __future__ import annotations

from typing import Final

MESSAGES: Final[dict[str, dict[str, str]]] = {
    "en": {
        "queued": "Queued",
        "submitted": "Sent to a worker",
        "running": "Generating",
        "generated": "Finishing",
        "storing": "Finishing",
        "succeeded": "Done",
        "failed": "Failed",
        "timed_out": "Timed out",
        "canceled": "Cancelled",
        "position": "Position",
        "eta": "ETA",
        "quota": "Today",
        "quota_left": "{remaining} of {limit} left",
        "refunded": "This image was not counted against your daily limit.",
        "worker_queue": "The worker is busy; your job is waiting in its queue.",
        "prompt": "Prompt",
        "translated": "English prompt",
        "upscale": "Upscale {n}",
        "variation": "Variation {n}",
        "reroll": "Re-roll",
        "cancel": "Cancel",
        "seconds": "~{n} s",
        "minutes": "~{n} min",
        "next": "next",
        "no_jobs": "You have no jobs waiting or running.",
        "not_yours": "You can only cancel your own jobs.",
        "cancelled_ok": "Cancelled; the image was refunded.",
        "already_over": "That job has already finished.",
        "quota_status": "You have used {used} of {limit} images today; {remaining} left. The limit resets <t:{reset}:R>.",
        "owner_only": "Only the bot owner can use this command.",
        "shutting_down": "The bot is restarting; please try again in a minute.",
        "blocked": "You cannot request images right now.",
        "history_empty": "You have no images yet.",
        "prompt_refused": "Your prompt was refused: it breaks this server's content rules. Please rephrase it.",
        "prompt_refused_blocked": "Your prompt was refused: it breaks this server's content rules. After repeated refusals you cannot request images for {duration}.",
        "blocked_for": "You cannot request images for another {duration}.",
        "rate_limited": "You are sending requests too quickly; try again in {duration}.",
        "prompt_too_long": "The prompt is too long ({length} characters; at most {limit}).",
        "translation_unavailable": "Translation is unavailable right now; your prompt was sent as written.",
        "duration_s": "{s} s",
        "duration_min": "{m} min",
        "duration_h": "{h} h",
        "duration_h_min": "{h} h {m} min",
    },
    "zh": {
        "queued": "排队中",
        "submitted": "已发送给生成节点",
        "running": "生成中",
        "generated": "收尾中",
        "storing": "收尾中",
        "succeeded": "完成",
        "failed": "失败",
        "timed_out": "超时",
        "canceled": "已取消",
        "position": "排队位置",
        "eta": "预计",
        "quota": "今日额度",
        "quota_left": "剩余 {remaining} / {limit}",
        "refunded": "本次不计入每日额度。",
        "worker_queue": "生成节点繁忙，任务正在其队列中等待。",
        "prompt": "提示词",
        "translated": "英文提示词",
        "upscale": "放大 {n}",
        "variation": "变体 {n}",
        "reroll": "重新生成",
        "cancel": "取消",
        "seconds": "约 {n} 秒",
        "minutes": "约 {n} 分钟",
        "next": "下一个",
        "no_jobs": "你没有排队或进行中的任务。",
        "not_yours": "你只能取消自己的任务。",
        "cancelled_ok": "已取消，额度已退还。",
        "already_over": "该任务已经结束。",
        "quota_status": "今日已用 {used} / {limit} 张，剩余 {remaining} 张，额度 <t:{reset}:R> 重置。",
        "owner_only": "只有机器人所有者可以使用此命令。",
        "shutting_down": "机器人正在重启，请稍后再试。",
        "blocked": "你目前无法生成图片。",
        "history_empty": "你还没有生成过图片。",
        "prompt_refused": "你的提示词违反了本服务器的内容规则，已被拒绝，请修改后重试。",
        "prompt_refused_blocked": "你的提示词违反了本服务器的内容规则，已被拒绝。由于多次被拒绝，你在 {duration} 内无法生成图片。",
        "blocked_for": "你在 {duration} 内无法生成图片。",
        "rate_limited": "请求过于频繁，请在 {duration} 后重试。",
        "prompt_too_long": "提示词过长（{length} 个字符，最多 {limit} 个）。",
        "translation_unavailable": "翻译服务暂不可用，提示词已按原文提交。",
        "duration_s": "{s} 秒",
        "duration_min": "{m} 分钟",
        "duration_h": "{h} 小时",
        "duration_h_min": "{h} 小时 {m} 分钟",
    },
}


def language(locale: str | None) -> str:
    """Map a Discord locale (``en-US``, ``zh-CN``, ``zh-TW``…) to one we have."""
    return "zh" if locale and locale.lower().startswith("zh") else "en"


def t(locale: str | None, key: str, **values: object) -> str:
    """The text for ``key`` in the member's language (English when missing)."""
    table = MESSAGES[language(locale)]
    template = table.get(key) or MESSAGES["en"][key]
    return template.format(**values) if values else template
