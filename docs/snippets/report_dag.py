from airflow.sdk import DAG, Asset, task

with DAG("report_scores", schedule=[Asset("scores")]) as dag:

    @task
    def report(triggering_asset_events=None):
        for event in triggering_asset_events[Asset("scores")]:
            print(event.source_run_id, event.extra["succeeded_items"], event.extra["output"])

    report()
