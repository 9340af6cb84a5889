"""Ferry's explainer: alibi AnchorTabular / KernelShap and a shap engine."""
