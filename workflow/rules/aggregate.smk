# Tables and figures are rebuilt from whatever results exist (missing runs show as pending);
# `make figures` runs the same command without Snakemake and without training. In Snakemake's
# report each table is its HTML version, shown inline with its caption; each figure is its PNG
# once (the PDF beside it in the results folder is the download).
rule report_experiment:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        table_csv=f"{R}/tables/{{experiment}}.csv",
        table_md=f"{R}/tables/{{experiment}}.md",
        table_tex=f"{R}/tables/{{experiment}}.tex",
        table_html=report(
            f"{R}/tables/{{experiment}}.html",
            caption="../report/table.rst",
            category="Verdicts",
            labels={"experiment": "{experiment}", "table": "verdicts"},
        ),
        time_to_accuracy=report(
            f"{R}/tables/{{experiment}}_time_to_accuracy.csv",
            caption="../report/time_to_accuracy.rst",
            category="Verdicts",
            labels={"experiment": "{experiment}", "table": "time to accuracy"},
        ),
        paired=report(
            f"{R}/tables/{{experiment}}_paired.csv",
            caption="../report/paired.rst",
            category="Verdicts",
            labels={"experiment": "{experiment}", "table": "1cycle minus baseline"},
        ),
        validity=f"{R}/tables/{{experiment}}_validity.csv",
    log:
        f"{R}/logs/report/{{experiment}}_runs.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only runs > {log:q} 2>&1"


# Accuracy against iteration; requested only for experiments that have it (not a bounds study:
# onecycle.report.build.accuracy_outputs).
rule accuracy_figure:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        png=report(
            f"{R}/figures/{{experiment}}_accuracy.png",
            caption="../report/accuracy.rst",
            category="Figures",
            labels={"experiment": "{experiment}", "figure": "accuracy vs iteration"},
        ),
        pdf=f"{R}/figures/{{experiment}}_accuracy.pdf",
    log:
        f"{R}/logs/report/{{experiment}}_accuracy.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only accuracy > {log:q} 2>&1"


rule range_test_figure:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_range_report_results,
    output:
        png=report(
            f"{R}/figures/{{experiment}}_range_test.png",
            caption="../report/range_test.rst",
            category="Figures",
            labels={"experiment": "{experiment}", "figure": "LR range test"},
        ),
        pdf=f"{R}/figures/{{experiment}}_range_test.pdf",
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
        png=report(
            f"{R}/figures/{{experiment}}_comparison.png",
            caption="../report/comparison.rst",
            category="Figures",
            labels={"experiment": "{experiment}", "figure": "final accuracy per setting"},
        ),
        pdf=f"{R}/figures/{{experiment}}_comparison.pdf",
    log:
        f"{R}/logs/report/{{experiment}}_comparison.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.experiment:q} --only comparison > {log:q} 2>&1"


# A bounds study (onecycle.experiments.bounds_study): every range-test rule scored by the training at its
# suggestion against a grid of max LRs, and how the range test's own settings move the rules.
rule bounds_study_report:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_bounds_study_results,
    output:
        regret_csv=f"{R}/tables/{{study}}_regret.csv",
        regret_md=f"{R}/tables/{{study}}_regret.md",
        regret_tex=f"{R}/tables/{{study}}_regret.tex",
        regret_html=report(
            f"{R}/tables/{{study}}_regret.html",
            caption="../report/bounds_study.rst",
            category="Bounds studies",
            labels={"study": "{study}", "table": "regret"},
        ),
        regret_png=report(
            f"{R}/figures/{{study}}_regret.png",
            caption="../report/bounds_study_figure.rst",
            category="Bounds studies",
            labels={"study": "{study}", "figure": "accuracy vs max_lr"},
        ),
        regret_pdf=f"{R}/figures/{{study}}_regret.pdf",
        settings_csv=f"{R}/tables/{{study}}_range_test_settings.csv",
        settings_md=f"{R}/tables/{{study}}_range_test_settings.md",
        settings_tex=f"{R}/tables/{{study}}_range_test_settings.tex",
        settings_html=report(
            f"{R}/tables/{{study}}_range_test_settings.html",
            caption="../report/bounds_settings.rst",
            category="Bounds studies",
            labels={"study": "{study}", "table": "range-test settings"},
        ),
        settings_png=report(
            f"{R}/figures/{{study}}_range_test_settings.png",
            caption="../report/bounds_settings_figure.rst",
            category="Bounds studies",
            labels={"study": "{study}", "figure": "range-test settings"},
        ),
        settings_pdf=f"{R}/figures/{{study}}_range_test_settings.pdf",
    log:
        f"{R}/logs/report/{{study}}_bounds_study.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --experiment {wildcards.study:q} --only bounds-study > {log:q} 2>&1"


# Only where the config has a bounds study: `--forcerun` of every report rule (`make report`)
# would otherwise create this rule's one job, which has nothing to summarise.
if PLAN.bounds_studies():

    localrules:
        bounds_study_summary,

    rule bounds_study_summary:
        input:
            workflow_config=f"{R}/workflow_config.json",
            regret=_bounds_summary_results,
        output:
            csv=f"{R}/tables/bounds_study_summary.csv",
            md=f"{R}/tables/bounds_study_summary.md",
            tex=f"{R}/tables/bounds_study_summary.tex",
            html=report(
                f"{R}/tables/bounds_study_summary.html",
                caption="../report/bounds_summary.rst",
                category="Bounds studies",
                labels={"study": "all", "table": "summary"},
            ),
        log:
            f"{R}/logs/report/bounds_study_summary.log",
        conda:
            "../../environment.yml"
        shell:
            "onecycle report --config {input.workflow_config:q} --only bounds-summary > {log:q} 2>&1"


# Each claim's verdict (onecycle.report.claims), for the experiments that state claims; in Snakemake's
# report its HTML version, shown inline with its caption.
rule claims_table:
    input:
        workflow_config=f"{R}/workflow_config.json",
        results=_run_report_results,
    output:
        csv=f"{R}/tables/{{experiment}}_claims.csv",
        md=f"{R}/tables/{{experiment}}_claims.md",
        tex=f"{R}/tables/{{experiment}}_claims.tex",
        html=report(
            f"{R}/tables/{{experiment}}_claims.html",
            caption="../report/claims.rst",
            category="Claims",
            labels={"experiment": "{experiment}", "table": "claims"},
        ),
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
        md=f"{R}/tables/claims_scorecard.md",
        tex=f"{R}/tables/claims_scorecard.tex",
        html=report(
            f"{R}/tables/claims_scorecard.html",
            caption="../report/scorecard.rst",
            category="Claims",
            labels={"experiment": "all", "table": "scorecard"},
        ),
        png=report(
            f"{R}/figures/claims_scorecard.png",
            caption="../report/scorecard.rst",
            category="Claims",
            labels={"experiment": "all", "table": "scorecard figure"},
        ),
        pdf=f"{R}/figures/claims_scorecard.pdf",
    log:
        f"{R}/logs/report/claims_scorecard.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --only scorecard > {log:q} 2>&1"


# The static report page beside the tables (onecycle.report.html): the claims, every
# experiment's verdicts and figures, offline, from the files above.
rule html_report:
    input:
        workflow_config=f"{R}/workflow_config.json",
        shown=[path for name in PLAN.workflow.experiments for path in experiment_outputs(PLAN, name).values()],
        scorecard=suite_outputs(PLAN).values(),
        bounds_summary=bounds_summary_outputs(PLAN).values(),
    output:
        f"{R}/report.html",
    log:
        f"{R}/logs/report/report_html.log",
    conda:
        "../../environment.yml"
    shell:
        "onecycle report --config {input.workflow_config:q} --only html > {log:q} 2>&1"
