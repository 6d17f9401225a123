"""Teacher backends. Each module holds one; `load_teacher` picks by `teacher.backend`."""

from __future__ import annotations

from distill.config import TeacherConfig
from distill.teachers.base import Completion, Request, Teacher, TeacherError

__all__ = ["Completion", "Request", "Teacher", "TeacherError", "load_teacher"]


def load_teacher(cfg: TeacherConfig) -> Teacher:
    if cfg.backend == "hf":
        from distill.teachers.hf import HFTeacher

        return HFTeacher(cfg)
    if cfg.backend == "vllm":
        from distill.teachers.vllm import VLLMTeacher

        return VLLMTeacher(cfg)
    if cfg.backend == "openai":
        from distill.teachers.openai import OpenAITeacher

        return OpenAITeacher(cfg)
    raise ValueError(f"teacher.backend: unknown backend {cfg.backend!r}")
