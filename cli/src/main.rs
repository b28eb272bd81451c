//! `ambient`: parses the command line and runs one command. The logic lives in the library.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ambient_cli::client::Client;
use ambient_cli::credits::{self, LimitFlags};
use ambient_cli::local::{Connection, LocalNetwork, LocalOptions};
use ambient_protocol::credits::{AccountCreate, Grant, format_credits};
use ambient_protocol::join::TokenRequest;
use ambient_protocol::{Requirements, TaskInfo, TaskSubmission, TaskType};
use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// Ambient VCP: an open compute network.
#[derive(Parser)]
#[command(version, about, bin_name = "ambient")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker, a coordinator and 3 agents in this process, run every case end to end,
    /// print a table, and exit 0 when every outcome is what it must be.
    Demo {
        /// Print the cases as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a local network (embedded broker, coordinator, agents) until Ctrl-C, and write
    /// DIR/connection.json for submitters.
    Up {
        /// Data directory.
        #[arg(long, default_value = "ambient-data")]
        data_dir: PathBuf,
        /// Number of agents.
        #[arg(long, default_value_t = 3)]
        agents: u32,
        /// REST API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// MQTT address of the embedded broker.
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_addr: SocketAddr,
        /// Keep the coordinator's state in this PostgreSQL database
        /// (`postgres://user:password@host:port/database`, which must exist) instead of
        /// DIR/coordinator/coordinator.db.
        #[arg(long, env = "AMBIENT_DATABASE_URL", hide_env_values = true)]
        store: Option<String>,
        /// A data set for federated learning, NAME=PATH.csv[:LABEL] (label column `target` by
        /// default): its rows are split across the agents, stratified by label, each agent
        /// holding only its part. Repeat for more.
        #[arg(long, value_parser = ambient_cli::datasets::parse_arg)]
        dataset: Vec<ambient_cli::datasets::DatasetArg>,
    },
    /// Submit a task and wait for its result.
    Submit {
        /// A task JSON file (the REST body). Or build one with --wasm, --model or --template.
        file: Option<PathBuf>,
        /// A task template of the coordinator's (`ambient templates list`), rendered by the
        /// coordinator with the --set values.
        #[arg(long, conflicts_with_all = [
            "file", "wasm", "model", "inputs", "min_nodes", "max_execution_time_sec"
        ])]
        template: Option<String>,
        /// A template parameter, NAME=VALUE: JSON when it reads as JSON (1e9, [1,2]), else text;
        /// @PATH sends the file in base64. Repeat for more.
        #[arg(long = "set", value_name = "NAME=VALUE", requires = "template",
              value_parser = ambient_cli::templates::parse_set)]
        set: Vec<ambient_cli::templates::SetArg>,
        /// A wasm module (.wasm, or .wat text compiled here) for a wasm_execution task.
        #[arg(long, conflicts_with_all = ["file", "model"])]
        wasm: Option<PathBuf>,
        /// An ONNX model for an inference task: uploaded with PUT /api/v1/blobs, then named by
        /// its sha256. Give the tensors with --inputs '{"x": {"dtype", "shape", "data"}}'.
        #[arg(long, conflicts_with = "file")]
        model: Option<PathBuf>,
        /// Task inputs as JSON (with --wasm), or the input tensors by name (with --model).
        #[arg(long, default_value = "{}")]
        inputs: String,
        /// Replicas that must agree (with --wasm).
        #[arg(long, default_value_t = 1)]
        min_nodes: u32,
        /// Time budget per run in seconds (with --wasm).
        #[arg(long, default_value_t = 30)]
        max_execution_time_sec: u64,
        /// Return right after submission.
        #[arg(long)]
        no_wait: bool,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Task templates the coordinator serves: ready-made tasks to run with
    /// `ambient submit --template NAME`.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Follow a task until it ends, with a progress bar for sharded computations.
    Watch {
        /// Task id.
        task_id: uuid::Uuid,
        /// Print the final task as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Show one task, or your recent tasks.
    Status {
        /// Task id.
        task_id: Option<uuid::Uuid>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Enrolment tokens, with which nodes join (`ambient-agent join TOKEN`). Needs an admin key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        admin: Admin,
    },
    /// Manage nodes. Needs an admin key.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
        #[command(flatten)]
        admin: Admin,
    },
    /// List nodes and their health.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Submitter accounts: their credits and limits. Needs an admin key.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
        #[command(flatten)]
        admin: Admin,
    },
    /// Submitters' API keys. Needs an admin key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
        #[command(flatten)]
        admin: Admin,
    },
    /// Your credits: balance, reserved, spent, earned, and your limits.
    Balance {
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Your ledger, oldest first: grants, reservations, charges, the nodes' pay and the fee of
    /// your tasks, and what was released back to you.
    Ledger {
        /// Start after this seq (the `seq` column).
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
        /// Entries per page (default 100; with --all, 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=credits::MAX_PAGE as i64))]
        limit: Option<u32>,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// The price list: what each kind of task costs, and the nodes' share. Needs no key.
    Prices {
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// Nodes by recent average credit.
    Leaderboard {
        /// How many nodes (default 100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=credits::MAX_PAGE as i64))]
        limit: Option<u32>,
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// List the templates.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
    /// One template: what it does, its parameters and defaults, its expected output and source.
    Show {
        /// The template's name.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: Api,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Make a submitter account and print its first API key (the only time it is shown).
    Create {
        /// Its name (letters, digits, `-`, `_`): the submitter id its tasks carry.
        name: String,
        /// An opening grant, in credits (e.g. 12.5).
        #[arg(
            long,
            default_value = "0",
            value_parser = credits::parse_amount,
            allow_negative_numbers = true
        )]
        credits: i64,
        #[command(flatten)]
        limits: LimitFlags,
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
    },
    /// List the accounts (the configuration's submitters included).
    List {
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
    },
    /// Mint credits into an account.
    Grant {
        /// The account.
        name: String,
        /// Credits (e.g. 12.5).
        #[arg(value_parser = credits::parse_positive_amount, allow_negative_numbers = true)]
        amount: i64,
        /// Why, for the ledger.
        #[arg(long)]
        memo: Option<String>,
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
    },
    /// Change an account's limits: the flags given change, the others stay (`none` lifts one).
    Limits {
        /// The account (one made with `ambient account create`).
        name: String,
        #[command(flatten)]
        limits: LimitFlags,
        /// Print JSON (amounts in µcredits).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Make another API key for an account and print it (the only time it is shown). To rotate
    /// a key, make one, then revoke the old.
    Create {
        /// The account.
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the API keys made at run time (without the keys themselves).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key: requests with it are refused from now on.
    Revoke {
        /// Key id (`key_…`).
        key_id: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print it (the only time its secret is shown).
    Create {
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it works: 90s, 30m, 12h, 7d, 2w.
        #[arg(long, default_value = "7d", value_parser = ambient_cli::admin::parse_duration)]
        expires: Duration,
        /// A note for yourself ("lab PCs").
        #[arg(long)]
        note: Option<String>,
        /// The account that operates the nodes joining with it (made with `ambient account
        /// create`): their earnings show on its account.
        #[arg(long)]
        operator: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (without their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: no more nodes join with it (nodes that joined stay).
    Revoke {
        /// Token id (`tok-…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Revoke an enrolled node: its broker account is removed (the broker disconnects it), its
    /// key no longer counts, and its tasks go to other nodes.
    Revoke {
        /// Node id.
        id: String,
    },
}

/// Where the coordinator is, and the operator's admin key (given before or after the
/// subcommand).
#[derive(Args)]
struct Admin {
    /// API base URL.
    #[arg(long, global = true, env = "AMBIENT_API_URL")]
    api_url: Option<String>,
    /// Admin key (one of the coordinator's `admin_keys`).
    #[arg(long, global = true, env = "AMBIENT_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// A connection.json written by `ambient up` (used when --api-url/--admin-key are not
    /// given).
    #[arg(long, global = true, default_value = "ambient-data/connection.json")]
    connection: PathBuf,
}

impl Admin {
    fn client(&self) -> anyhow::Result<Client> {
        if let (Some(url), Some(key)) = (&self.api_url, &self.admin_key) {
            return Ok(Client::new(url, key));
        }
        let c = read_connection(&self.connection, "--api-url/--admin-key")?;
        let key = c
            .admin_key
            .with_context(|| format!("{} holds no admin key", self.connection.display()))?;
        Ok(Client::new(&c.api_url, &key))
    }
}

fn read_connection(path: &std::path::Path, flags: &str) -> anyhow::Result<Connection> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no {flags} and cannot read {} (start one with `ambient up`)",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// Where the coordinator is.
#[derive(Args)]
struct Api {
    /// API base URL.
    #[arg(long, env = "AMBIENT_API_URL")]
    api_url: Option<String>,
    /// API key.
    #[arg(long, env = "AMBIENT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A connection.json written by `ambient up` (used when --api-url/--api-key are not given).
    #[arg(long, default_value = "ambient-data/connection.json")]
    connection: PathBuf,
}

impl Api {
    fn client(&self) -> anyhow::Result<Client> {
        if let (Some(url), Some(key)) = (&self.api_url, &self.api_key) {
            return Ok(Client::new(url, key));
        }
        let c = read_connection(&self.connection, "--api-url/--api-key")?;
        Ok(Client::new(&c.api_url, &c.api_key))
    }

    /// A client for routes that need no key: --api-url alone is enough.
    fn public_client(&self) -> anyhow::Result<Client> {
        match &self.api_url {
            Some(url) => Ok(Client::new(
                url,
                self.api_key.as_deref().unwrap_or_default(),
            )),
            None => self.client(),
        }
    }
}

/// Prints `value` as pretty JSON.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let quiet = matches!(cli.command, Command::Demo { .. });
        // rumqttd logs every client disconnect at ERROR; keep the demo's table readable.
        tracing_subscriber::EnvFilter::new(if quiet {
            "warn,rumqttd=off"
        } else {
            "info,rumqttd=warn"
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo { json } => demo(json).await,
        Command::Watch { task_id, json, api } => {
            let client = api.client()?;
            let info = client
                .wait(task_id, Duration::from_secs(24 * 3600), progress_line)
                .await?;
            eprintln!();
            print_task(&info, json)?;
            Ok(())
        }
        Command::Up {
            data_dir,
            agents,
            http_addr,
            mqtt_addr,
            store,
            dataset,
        } => up(data_dir, agents, http_addr, mqtt_addr, store, dataset).await,
        Command::Submit {
            file,
            template,
            set,
            wasm,
            model,
            inputs,
            min_nodes,
            max_execution_time_sec,
            no_wait,
            json,
            api,
        } => {
            let client = api.client()?;
            let body = match (file, wasm, model) {
                (Some(f), _, _) => {
                    std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?
                }
                (None, Some(w), _) => {
                    let bytes =
                        std::fs::read(&w).with_context(|| format!("reading {}", w.display()))?;
                    let module = if w.extension().is_some_and(|e| e == "wat") {
                        wat::parse_bytes(&bytes)?.into_owned()
                    } else {
                        bytes
                    };
                    serde_json::to_vec(&TaskSubmission {
                        task_type: TaskType::WasmExecution,
                        wasm_module: Some(base64::engine::general_purpose::STANDARD.encode(module)),
                        inputs: serde_json::from_str(&inputs).context("--inputs is not JSON")?,
                        requirements: Requirements {
                            min_nodes,
                            max_execution_time_sec,
                            ..Requirements::default()
                        },
                        task_id: None,
                    })?
                }
                (None, None, Some(path)) => {
                    let bytes = std::fs::read(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let sha = client.put_blob(bytes).await?;
                    eprintln!("uploaded {} as {sha}", path.display());
                    let tensors: serde_json::Value =
                        serde_json::from_str(&inputs).context("--inputs is not JSON")?;
                    serde_json::to_vec(&TaskSubmission {
                        task_type: TaskType::Inference,
                        wasm_module: None,
                        inputs: serde_json::json!({"model_sha256": sha, "tensors": tensors}),
                        requirements: Requirements {
                            max_execution_time_sec,
                            ..Requirements::default()
                        },
                        task_id: None,
                    })?
                }
                (None, None, None) => match template {
                    Some(name) => ambient_cli::templates::render(&client, &name, &set).await?,
                    None => bail!(
                        "give a task JSON file, --wasm MODULE, --model MODEL.onnx or --template NAME"
                    ),
                },
            };
            let info = client.submit_raw(body).await?;
            let info = if no_wait {
                info
            } else {
                let done = client
                    .wait(info.task_id, Duration::from_secs(24 * 3600), progress_line)
                    .await?;
                eprintln!();
                done
            };
            print_task(&info, json)?;
            if info.status.is_terminal() && info.status != ambient_protocol::TaskStatus::Completed {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Templates { command } => match command {
            TemplatesCommand::List { json, api } => {
                let templates = api.client()?.templates().await?;
                if json {
                    print_json(&templates)
                } else {
                    print!("{}", ambient_cli::templates::list_table(&templates));
                    Ok(())
                }
            }
            TemplatesCommand::Show { name, json, api } => {
                let templates = api.client()?.templates().await?;
                let t =
                    ambient_cli::templates::find(&templates, &name).map_err(anyhow::Error::msg)?;
                if json {
                    print_json(t)
                } else {
                    print!("{}", ambient_cli::templates::show_text(t));
                    Ok(())
                }
            }
        },
        Command::Status { task_id, json, api } => {
            let client = api.client()?;
            match task_id {
                Some(id) => print_task(&client.task(id).await?, json),
                None => {
                    let tasks = client.tasks().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&tasks)?);
                    } else {
                        println!("{:<36}  {:<15}  {:<10}  updated", "task", "type", "status");
                        for t in tasks {
                            println!(
                                "{:<36}  {:<15}  {:<10}  {}",
                                t.task_id,
                                t.task_type,
                                t.status,
                                t.updated_at.format("%Y-%m-%d %H:%M:%S")
                            );
                        }
                    }
                    Ok(())
                }
            }
        }
        Command::Token { command, admin } => {
            let client = admin.client()?;
            match command {
                TokenCommand::Create {
                    uses,
                    expires,
                    note,
                    operator,
                    json,
                } => {
                    let req = TokenRequest {
                        uses: Some(uses),
                        expires_in_sec: Some(expires.as_secs()),
                        note,
                        operator,
                    };
                    let t = client.create_token(&req).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&t)?);
                    } else {
                        eprintln!(
                            "Token {} for {} node(s), valid until {}. On each node run:",
                            t.id,
                            t.uses,
                            t.expires_at.format("%Y-%m-%d %H:%M UTC")
                        );
                        println!("{}", t.token.unwrap_or_default());
                    }
                }
                TokenCommand::List { json } => {
                    let tokens = client.tokens().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&tokens)?);
                    } else {
                        print!("{}", ambient_cli::admin::token_table(&tokens));
                    }
                }
                TokenCommand::Revoke { id } => {
                    client.revoke_token(&id).await?;
                    eprintln!("Token {id} revoked.");
                }
            }
            Ok(())
        }
        Command::Node {
            command: NodeCommand::Revoke { id },
            admin,
        } => {
            admin.client()?.revoke_node(&id).await?;
            eprintln!("Node {id} revoked: disconnected, and its tasks go to other nodes.");
            Ok(())
        }
        Command::Account { command, admin } => account(command, &admin.client()?).await,
        Command::Key { command, admin } => {
            let client = admin.client()?;
            match command {
                KeyCommand::Create { account, json } => {
                    let k = client.create_key(&account).await?;
                    if json {
                        print_json(&k)?;
                    } else {
                        eprintln!(
                            "API key {} for account {} (shown only this once; keep it):",
                            k.key_id, k.account
                        );
                        println!("{}", k.api_key);
                    }
                }
                KeyCommand::List { json } => {
                    let keys = client.keys().await?;
                    if json {
                        print_json(&keys)?;
                    } else {
                        print!("{}", credits::key_table(&keys));
                    }
                }
                KeyCommand::Revoke { key_id } => {
                    client.revoke_key(&key_id).await?;
                    eprintln!("API key {key_id} revoked.");
                }
            }
            Ok(())
        }
        Command::Balance { json, api } => {
            let a = api.client()?.account().await?;
            if json {
                print_json(&a)
            } else {
                print!("{}", credits::account_summary(&a));
                Ok(())
            }
        }
        Command::Ledger {
            after,
            limit,
            all,
            json,
            api,
        } => {
            let client = api.client()?;
            let page = credits::ledger(&client, credits::Ledger::Mine, after, limit, all).await?;
            if json {
                return print_json(&page);
            }
            print!("{}", credits::ledger_table(&page.entries));
            if let Some(next) = page.next_after {
                eprintln!("More after seq {next}: ambient ledger --after {next} (or --all).");
            }
            Ok(())
        }
        Command::Prices { json, api } => {
            let prices = api.public_client()?.prices().await?;
            if json {
                print_json(&prices)
            } else {
                print!("{}", credits::price_table(&prices));
                Ok(())
            }
        }
        Command::Leaderboard { limit, json, api } => {
            let rows = api.client()?.leaderboard(limit).await?;
            if json {
                print_json(&rows)
            } else {
                print!("{}", credits::leaderboard_table(&rows));
                Ok(())
            }
        }
        Command::Nodes { json, api } => {
            let nodes = api.client()?.nodes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&nodes)?);
            } else {
                println!(
                    "{:<20}  {:<8}  {:>6}  {:>6}  {:>8}  {:>4}  identity",
                    "node", "state", "score", "cpu%", "mem free", "gpus"
                );
                for n in nodes {
                    let (cpu, mem, gpus) = n.health.as_ref().map_or((0.0, 0, 0), |h| {
                        (h.cpu_usage_pct, h.mem_available_bytes >> 20, h.gpus.len())
                    });
                    // The start of the ed25519 key the node published, to compare by eye.
                    let identity = n.identity.as_deref().map_or("-", |k| &k[..k.len().min(16)]);
                    println!(
                        "{:<20}  {:<8}  {:>6.1}  {:>6.1}  {:>6}Mi  {:>4}  {identity}",
                        n.node_id,
                        format!("{:?}", n.state).to_lowercase(),
                        n.health_score,
                        cpu,
                        mem,
                        gpus
                    );
                }
            }
            Ok(())
        }
    }
}

/// `ambient account …`, with an admin client.
async fn account(command: AccountCommand, client: &Client) -> anyhow::Result<()> {
    match command {
        AccountCommand::Create {
            name,
            credits,
            limits,
            json,
        } => {
            let created = client
                .create_account(&AccountCreate {
                    account: name,
                    credits,
                    limits: limits.apply(Default::default()),
                })
                .await?;
            if json {
                return print_json(&created);
            }
            let a = &created.account;
            eprintln!(
                "Account {} made: balance {} credits, limits {}.",
                a.account,
                format_credits(a.balance),
                credits::limits_text(&a.limits)
            );
            eprintln!(
                "Its API key {} (shown only this once; keep it):",
                created.key.key_id
            );
            println!("{}", created.key.api_key);
        }
        AccountCommand::List { json } => {
            let accounts = client.accounts().await?;
            if json {
                return print_json(&accounts);
            }
            print!("{}", credits::account_table(&accounts));
        }
        AccountCommand::Grant {
            name,
            amount,
            memo,
            json,
        } => {
            let grant = Grant {
                amount,
                memo: memo.unwrap_or_default(),
            };
            let a = client.grant(&name, &grant).await?;
            if json {
                return print_json(&a);
            }
            eprintln!("Granted {} credits to {name}.", format_credits(amount));
            print!("{}", credits::account_summary(&a));
        }
        AccountCommand::Limits { name, limits, json } => {
            if limits.is_empty() {
                usage_error(
                    &["account", "limits"],
                    "give --max-in-flight, --max-per-second or --spending-cap \
                     (a value, or none to lift the limit)",
                );
            }
            // The API replaces all the limits at once: start from the account's.
            let current = client
                .accounts()
                .await?
                .into_iter()
                .find(|a| a.account == name)
                .map(|a| a.limits)
                .unwrap_or_default();
            let a = client.set_limits(&name, &limits.apply(current)).await?;
            if json {
                return print_json(&a);
            }
            print!("{}", credits::account_summary(&a));
        }
    }
    Ok(())
}

/// Exits with a clap usage error for the subcommand at `path`, as if clap had found it.
fn usage_error(path: &[&str], message: &str) -> ! {
    let mut cmd = Cli::command();
    cmd.build();
    let mut sub = &mut cmd;
    for name in path {
        sub = sub
            .find_subcommand_mut(name)
            .expect("the path names subcommands");
    }
    sub.error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

/// What a task's `progress` counts: a federated job's rounds (the statistics round and the
/// training rounds), otherwise a computation's shards.
fn progress_unit(task_type: TaskType) -> &'static str {
    match task_type {
        TaskType::FederatedLearning => "rounds",
        _ => "shards",
    }
}

/// One status line on stderr, rewritten in place: a progress bar for sharded computations and
/// federated jobs.
fn progress_line(i: &TaskInfo) {
    let mut err = std::io::stderr();
    let time = chrono::Utc::now().format("%H:%M:%S");
    let line = match i.progress {
        Some(p) => {
            let width = 30;
            let filled = (p.done as usize * width) / (p.total.max(1) as usize);
            format!(
                "[{time}] {} {} [{}{}] {}/{} {}",
                i.task_id,
                i.status,
                "#".repeat(filled),
                "-".repeat(width - filled),
                p.done,
                p.total,
                progress_unit(i.task_type)
            )
        }
        None => {
            let reason = i
                .status_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            format!("[{time}] {} {}{reason}", i.task_id, i.status)
        }
    };
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

fn print_task(info: &TaskInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    println!(
        "task     {}\ntype     {}\nstatus   {}\nnodes    {}",
        info.task_id,
        info.task_type,
        info.status,
        info.assigned_nodes.join(", ")
    );
    if let Some(r) = &info.result {
        println!("output   {}", r["output"]);
    }
    if let Some(e) = &info.error {
        println!("error    {e}");
    }
    if let Some(r) = &info.status_reason {
        println!("waiting  {r}");
    }
    Ok(())
}

async fn demo(json: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    eprintln!("Starting an embedded broker, a coordinator and 3 agents…");
    let report = ambient_cli::demo::run(dir.path(), 1_000_000_000, None).await?;
    let cases = &report.cases;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", ambient_cli::demo::table(cases));
        if let Some(id) = &report.proof_id {
            println!("\nVerified Groth16 proof of the zk_proof task: {id}");
        }
        if let Some(f) = &report.federated {
            println!(
                "Federated learning: accuracy {:.1} % after {} rounds, ε spent {:.3} of {} (δ = 1e-5)",
                100.0 * f.accuracy,
                f.rounds,
                f.epsilon_spent,
                f.epsilon
            );
        }
        println!("\nReputations (valid and invalid include proofs):");
        print!("{}", ambient_cli::demo::reputation_table(&report.nodes));
        if let Some(c) = &report.credits {
            println!("\nCredits:");
            print!("{}", ambient_cli::demo::credits_report(c));
        }
    }
    if let Some(w) = &report.credits_warning {
        eprintln!("warning: {w}");
    }
    let failed = cases.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        eprintln!("{failed} case(s) did not give the expected outcome.");
        std::process::exit(1);
    }
    eprintln!("All {} cases gave the expected outcome.", cases.len());
    Ok(())
}

async fn up(
    data_dir: PathBuf,
    agents: u32,
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    store: Option<String>,
    datasets: Vec<ambient_cli::datasets::DatasetArg>,
) -> anyhow::Result<()> {
    ambient_service::private::create_dir(&data_dir)?;
    let datasets = ambient_cli::datasets::split(&datasets, agents, &data_dir)?;
    let net = LocalNetwork::start(LocalOptions {
        data_dir: data_dir.clone(),
        agents,
        http_addr,
        mqtt_addr,
        health_interval_sec: 5.0,
        datasets,
        store,
    })
    .await?;
    let path = data_dir.join("connection.json");
    ambient_service::private::write_file(&path, serde_json::to_string_pretty(&net.connection)?)?;
    let c = &net.connection;
    println!(
        "Ambient VCP is up: {agents} agents, API {}, MQTT {}:{}",
        c.api_url, c.mqtt_host, c.mqtt_port
    );
    println!(
        "Submitter and admin credentials, and a join token for more nodes: {} (mode 0600)",
        path.display()
    );
    println!("Press Ctrl-C to stop.");
    ambient_service::shutdown_signal().await;
    net.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_federated_task_counts_rounds() {
        assert_eq!(progress_unit(TaskType::FederatedLearning), "rounds");
        assert_eq!(progress_unit(TaskType::Computation), "shards");
    }
}
