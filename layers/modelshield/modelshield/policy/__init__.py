"""Security groups, sources, rules as data, and the verdict.

catalog (rules with rationale) · settings (typed rule settings) · groups (SecurityGroup, YAML loading,
defaults) · sources (which group governs an object) · metadata (what rules know besides bytes) ·
signing (OpenSSF model signatures) · engine (evaluate → Evaluation) · gather (metadata via a port) ·
docs (docs/rules.md generator).
"""
