# Tables and figures are rebuilt from whatever results exist (missing runs show as pending);
# `make figures` runs the same command without Snakemake and without training.
rule report_experiment:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        table_csv=f"{R}/tables/{{experiment}}.csv",
        table_md=report(f"{R}/tables/{{experiment}}.md", caption="../report/table.rst", category="Tables"),
        table_tex=f"{R}/tables/{{experiment}}.tex",
        time_to_accuracy=report(
            f"{R}/tables/{{experiment}}_time_to_accuracy.csv",
            caption="../report/time_to_accuracy.rst",
            category="Tables",
        ),
        paired=report(
            f"{R}/tables/{{experiment}}_paired.csv",
            caption="../report/paired.rst",
            category="Tables",
        ),
        figures=report(
            multiext(f"{R}/figures/{{experiment}}_accuracy", ".png", ".pdf"),
            caption="../report/accuracy.rst",
            category="Accuracy curves",
        ),
    log:
        f"{R}/logs/report/{{experiment}}_runs.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only runs > {log:q} 2>&1"


rule range_test_figure:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_range_report_results,
    output:
        report(
            multiext(f"{R}/figures/{{experiment}}_range_test", ".png", ".pdf"),
            caption="../report/range_test.rst",
            category="Range tests",
        ),
    log:
        f"{R}/logs/report/{{experiment}}_range_test.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only range-test > {log:q} 2>&1"


rule comparison_figure:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        report(
            multiext(f"{R}/figures/{{experiment}}_comparison", ".png", ".pdf"),
            caption="../report/comparison.rst",
            category="Comparisons",
        ),
    log:
        f"{R}/logs/report/{{experiment}}_comparison.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only comparison > {log:q} 2>&1"


# A bounds study (onecycle.bounds_study): every range-test rule scored by the training at its
# suggestion against a grid of max LRs, and how the range test's own settings move the rules.
rule bounds_study_report:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_bounds_study_results,
    output:
        regret_csv=f"{R}/tables/{{study}}_regret.csv",
        regret_md=report(f"{R}/tables/{{study}}_regret.md", caption="../report/bounds_study.rst", category="Bounds studies"),
        regret_tex=f"{R}/tables/{{study}}_regret.tex",
        regret_figure=report(
            multiext(f"{R}/figures/{{study}}_regret", ".png", ".pdf"),
            caption="../report/bounds_study_figure.rst",
            category="Bounds studies",
        ),
        settings_csv=f"{R}/tables/{{study}}_range_test_settings.csv",
        settings_md=report(
            f"{R}/tables/{{study}}_range_test_settings.md",
            caption="../report/bounds_settings.rst",
            category="Bounds studies",
        ),
        settings_tex=f"{R}/tables/{{study}}_range_test_settings.tex",
        settings_figure=report(
            multiext(f"{R}/figures/{{study}}_range_test_settings", ".png", ".pdf"),
            caption="../report/bounds_settings.rst",
            category="Bounds studies",
        ),
    log:
        f"{R}/logs/report/{{study}}_bounds_study.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.study:q} --only bounds-study > {log:q} 2>&1"


rule bounds_study_summary:
    input:
        workflow_config=f"{R}/workflow_config.json",
        regret=_bounds_summary_results,
    output:
        csv=f"{R}/tables/bounds_study_summary.csv",
        md=report(f"{R}/tables/bounds_study_summary.md", caption="../report/bounds_summary.rst", category="Bounds studies"),
        tex=f"{R}/tables/bounds_study_summary.tex",
    log:
        f"{R}/logs/report/bounds_study_summary.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --only bounds-summary > {log:q} 2>&1"


# Each claim's verdict (onecycle.claims), for the experiments that state claims.
rule claims_table:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        csv=f"{R}/tables/{{experiment}}_claims.csv",
        md=report(f"{R}/tables/{{experiment}}_claims.md", caption="../report/claims.rst", category="Claims"),
        tex=f"{R}/tables/{{experiment}}_claims.tex",
    log:
        f"{R}/logs/report/{{experiment}}_claims.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only claims > {log:q} 2>&1"


# One scorecard for the whole config: claim x dataset/architecture -> verdict, from the claims tables.
rule claims_scorecard:
    input:
        workflow_config=f"{R}/workflow_config.json",
        tables=[claims_outputs(PLAN, name)["claims_csv"] for name in PLAN.workflow.experiments if claims_outputs(PLAN, name)],
    output:
        csv=f"{R}/tables/claims_scorecard.csv",
        md=report(f"{R}/tables/claims_scorecard.md", caption="../report/scorecard.rst", category="Claims"),
        tex=f"{R}/tables/claims_scorecard.tex",
        figures=report(
            multiext(f"{R}/figures/claims_scorecard", ".png", ".pdf"),
            caption="../report/scorecard.rst",
            category="Claims",
        ),
    log:
        f"{R}/logs/report/claims_scorecard.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --only scorecard > {log:q} 2>&1"
